//! Phone numbers in E.164 form (`+14155550123`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("unknown default region {0:?} (expected an ISO 3166 alpha-2 code such as \"US\")")]
    UnknownRegion(String),
    #[error("not a phone number")]
    Unparseable,
    #[error("not a possible phone number for its country (wrong number of digits)")]
    Invalid,
}

/// A valid phone number normalised to E.164.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses `input`; numbers without a `+country` prefix are read in
    /// `default_region` (ISO alpha-2, e.g. `"US"`, `"DE"`).
    pub fn parse(input: &str, default_region: Option<&str>) -> Result<Self, PhoneError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        if trimmed.len() > 64 {
            return Err(PhoneError::Unparseable);
        }
        let region = match default_region {
            Some(r) => Some(parse_region(r)?),
            None => None,
        };
        let number = phonenumber::parse(region, trimmed).map_err(|_| PhoneError::Unparseable)?;
        if !is_possible(&number) {
            return Err(PhoneError::Invalid);
        }
        let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
        Ok(Self(e164))
    }

    /// Checks that a default-region code is known, for config validation.
    pub fn check_region(region: &str) -> Result<(), PhoneError> {
        parse_region(region).map(|_| ())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `+1415*****23`: keeps the country code and the last two digits.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        if n <= 6 {
            return "***".into();
        }
        format!("{}{}{}", &self.0[..5], "*".repeat(n - 7), &self.0[n - 2..])
    }
}

/// libphonenumber's "possible number" check: the national number has a
/// length that numbers of its country calling code can have. This is the
/// check libphonenumber recommends for user input; the stricter pattern
/// match rejects numbers from ranges allocated after the metadata was built.
fn is_possible(number: &phonenumber::PhoneNumber) -> bool {
    let national_len = number.national().to_string().len() as u16;
    let code = number.country().code();
    let Some(regions) = phonenumber::metadata::DATABASE.by_code(&code) else {
        return false;
    };
    regions.iter().any(|m| {
        let d = m.descriptors();
        // The general description's lengths are the union of every number
        // type's (this metadata leaves the general list empty).
        let types = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ];
        d.general().possible_length().contains(&national_len)
            || types
                .into_iter()
                .flatten()
                .any(|t| t.possible_length().contains(&national_len))
    })
}

fn parse_region(r: &str) -> Result<phonenumber::country::Id, PhoneError> {
    phonenumber::country::Id::from_str(&r.trim().to_ascii_uppercase())
        .map_err(|_| PhoneError::UnknownRegion(r.to_string()))
}

impl fmt::Display for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneE164({})", self.masked())
    }
}

impl Serialize for PhoneE164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl PhoneE164 {
    /// Accepts a string already in E.164 form (`+` then 7–15 digits, no
    /// leading zero) without re-running the full numbering-plan check:
    /// for values leadrelay itself normalised and stored.
    pub fn from_e164(s: &str) -> Result<Self, PhoneError> {
        let digits = s.strip_prefix('+').ok_or(PhoneError::Unparseable)?;
        let ok = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(PhoneError::Invalid)
        }
    }
}

impl<'de> Deserialize<'de> for PhoneE164 {
    /// Stored and serialized phones are already normalised, so reading one
    /// back checks the E.164 shape only; input from people goes through
    /// [`PhoneE164::parse`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneE164::from_e164(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn national_numbers_use_default_region() {
        assert_eq!(
            PhoneE164::parse("(415) 555-2671", Some("US"))
                .unwrap()
                .as_str(),
            "+14155552671"
        );
        assert_eq!(
            PhoneE164::parse("030 901820", Some("de")).unwrap().as_str(),
            "+4930901820"
        );
        assert_eq!(
            PhoneE164::parse("+44 20 7946 0958", Some("US"))
                .unwrap()
                .as_str(),
            "+442079460958"
        );
    }

    #[test]
    fn rejects_garbage_and_unknown_regions() {
        assert_eq!(PhoneE164::parse("", Some("US")), Err(PhoneError::Empty));
        assert!(PhoneE164::parse("hello", Some("US")).is_err());
        assert!(PhoneE164::parse("123", Some("US")).is_err());
        assert!(
            PhoneE164::parse("415 555 26", Some("US")).is_err(),
            "too short for the US"
        );
        assert!(
            PhoneE164::parse("+1 415 555 26711", None).is_err(),
            "too long for the US"
        );
        assert!(matches!(
            PhoneE164::parse("4155552671", Some("XX")),
            Err(PhoneError::UnknownRegion(_))
        ));
    }

    #[test]
    fn stored_e164_round_trips_without_reparsing() {
        let p = PhoneE164::parse("+14155552671", None).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PhoneE164>(&json).unwrap(), p);
        for bad in ["\"4155552671\"", "\"+0123456\"", "\"+1 415\"", "\"+123\""] {
            assert!(serde_json::from_str::<PhoneE164>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masks() {
        let p = PhoneE164::parse("+14155552671", None).unwrap();
        assert_eq!(p.masked(), "+1415*****71");
    }
}
