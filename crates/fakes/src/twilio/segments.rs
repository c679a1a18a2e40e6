//! SMS segment counting, as Twilio bills it: GSM-7 bodies hold 160 septets in one segment or
//! 153 per segment when concatenated (extension characters take two septets); any other
//! character switches the body to UCS-2, 70 code units in one segment or 67 per segment.

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// How many segments a body takes (0 for an empty body).
pub fn count(body: &str) -> u32 {
    if body.is_empty() {
        return 0;
    }
    let septets: Option<usize> = body
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, multi) = match septets {
        Some(n) => (n, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    u32::try_from(segments).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod unit {
    use super::count;

    #[test]
    fn gsm7_and_ucs2_segments() {
        assert_eq!(count(""), 0);
        assert_eq!(count(&"a".repeat(160)), 1);
        assert_eq!(count(&"a".repeat(161)), 2);
        assert_eq!(count(&"a".repeat(306)), 2);
        assert_eq!(count(&"a".repeat(307)), 3);
        assert_eq!(count(&"{".repeat(80)), 1);
        assert_eq!(count(&"{".repeat(81)), 2);
        assert_eq!(count(&"é".repeat(70)), 1);
        assert_eq!(count(&"ł".repeat(70)), 1);
        assert_eq!(count(&"ł".repeat(71)), 2);
        assert_eq!(count("hi 👋"), 1);
    }
}
