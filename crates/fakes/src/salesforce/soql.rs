//! A small SOQL subset: `SELECT f1, f2 | COUNT() FROM obj [WHERE cond]
//! [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST]] [LIMIT n] [OFFSET n]`, with
//! string literals escaped as SOQL requires (`\'`, `\\`, `\"`, `\n`, `\r`,
//! `\t`, `\b`, `\f`, and `\%`/`\_` inside `LIKE`).

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::errors::{RestError, SfError};
use super::rest::{field, record_json};
use super::schema::{SalesforceFieldType as T, SalesforceObjectDef};
use super::{SalesforceRecord, SalesforceState, Store};

fn malformed(message: impl Into<String>) -> RestError {
    RestError::bad(SfError::new("MALFORMED_QUERY", message))
}

fn no_such_column(name: &str, object: &str) -> RestError {
    RestError::bad(SfError::new(
        "INVALID_FIELD",
        format!(
            "No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
        ),
    ))
}

/// One element of a `LIKE` pattern.
#[derive(Debug, Clone, PartialEq)]
enum Pat {
    Lit(char),
    One,
    Many,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String, Vec<Pat>),
    Num(String),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn lex(q: &str) -> Result<Vec<Tok>, RestError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '=' => {
                out.push(Tok::Op("=".into()));
                i += 1;
            }
            '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if matches!(two.as_str(), "!=" | "<=" | ">=" | "<>") {
                    out.push(Tok::Op(if two == "<>" { "!=".into() } else { two }));
                    i += 2;
                } else if c == '!' {
                    return Err(malformed("unexpected token: '!'"));
                } else {
                    out.push(Tok::Op(c.to_string()));
                    i += 1;
                }
            }
            '\'' => {
                let start = i;
                i += 1;
                let mut text = String::new();
                let mut pat = Vec::new();
                loop {
                    let Some(&ch) = chars.get(i) else {
                        let lit: String = chars[start..].iter().collect();
                        return Err(malformed(format!(
                            "Invalid string literal {lit}: missing closing quote"
                        )));
                    };
                    match ch {
                        '\'' => {
                            i += 1;
                            break;
                        }
                        '\\' => {
                            let Some(&next) = chars.get(i + 1) else {
                                return Err(malformed("Invalid string literal: dangling escape"));
                            };
                            let (decoded, p) = match next {
                                '\'' | '"' | '\\' => (next, Pat::Lit(next)),
                                'n' => ('\n', Pat::Lit('\n')),
                                'r' => ('\r', Pat::Lit('\r')),
                                't' => ('\t', Pat::Lit('\t')),
                                'b' => ('\u{8}', Pat::Lit('\u{8}')),
                                'f' => ('\u{c}', Pat::Lit('\u{c}')),
                                '%' | '_' => (next, Pat::Lit(next)),
                                other => {
                                    return Err(malformed(format!(
                                        "Invalid string literal. Illegal character sequence '\\{other}' in string literal."
                                    )));
                                }
                            };
                            // `\%` and `\_` keep their backslash outside LIKE.
                            if next == '%' || next == '_' {
                                text.push('\\');
                            }
                            text.push(decoded);
                            pat.push(p);
                            i += 2;
                        }
                        '%' => {
                            text.push(ch);
                            pat.push(Pat::Many);
                            i += 1;
                        }
                        '_' => {
                            text.push(ch);
                            pat.push(Pat::One);
                            i += 1;
                        }
                        other => {
                            text.push(other);
                            pat.push(Pat::Lit(other));
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(text, pat));
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || matches!(chars[i], '.' | '-' | ':' | '+'))
                {
                    i += 1;
                }
                out.push(Tok::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.'))
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
            other => return Err(malformed(format!("unexpected token: '{other}'"))),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    /// An unquoted date or datetime literal.
    Date(String),
}

#[derive(Debug, Clone)]
enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(String, String, Lit),
    In(String, Vec<Lit>, bool),
    Like(String, Vec<Pat>),
}

#[derive(Debug)]
struct Query {
    count: bool,
    fields: Vec<String>,
    object: String,
    cond: Option<Cond>,
    order: Option<(String, bool, bool)>,
    limit: Option<usize>,
    offset: usize,
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), RestError> {
        if self.is_kw(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn unexpected(&self) -> RestError {
        match self.peek() {
            Some(t) => malformed(format!("unexpected token: '{}'", tok_text(t))),
            None => malformed("unexpected end of query"),
        }
    }

    fn word(&mut self) -> Result<String, RestError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn literal(&mut self) -> Result<Lit, RestError> {
        match self.next() {
            Some(Tok::Str(s, _)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => {
                if n.contains('-') && n.len() >= 10 && !n.starts_with('-') {
                    Ok(Lit::Date(n))
                } else {
                    n.parse()
                        .map(Lit::Num)
                        .map_err(|_| malformed(format!("unexpected token: '{n}'")))
                }
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Lit::Null),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            _ => {
                self.pos -= 1;
                Err(self.unexpected())
            }
        }
    }

    fn cond(&mut self) -> Result<Cond, RestError> {
        let mut left = self.and_cond()?;
        while self.is_kw("OR") {
            self.pos += 1;
            let right = self.and_cond()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_cond(&mut self) -> Result<Cond, RestError> {
        let mut left = self.term()?;
        while self.is_kw("AND") {
            self.pos += 1;
            let right = self.term()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<Cond, RestError> {
        if self.is_kw("NOT") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.term()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let c = self.cond()?;
            if self.next() != Some(Tok::RParen) {
                self.pos -= 1;
                return Err(self.unexpected());
            }
            return Ok(c);
        }
        let field = self.word()?;
        let negated_in = if self.is_kw("NOT") {
            self.pos += 1;
            true
        } else {
            false
        };
        if self.is_kw("IN") {
            self.pos += 1;
            if self.next() != Some(Tok::LParen) {
                self.pos -= 1;
                return Err(self.unexpected());
            }
            let mut values = vec![self.literal()?];
            loop {
                match self.next() {
                    Some(Tok::Comma) => values.push(self.literal()?),
                    Some(Tok::RParen) => break,
                    _ => {
                        self.pos -= 1;
                        return Err(self.unexpected());
                    }
                }
            }
            return Ok(Cond::In(field, values, negated_in));
        }
        if negated_in {
            return Err(self.unexpected());
        }
        if self.is_kw("LIKE") {
            self.pos += 1;
            return match self.next() {
                Some(Tok::Str(_, p)) => Ok(Cond::Like(field, p)),
                _ => {
                    self.pos -= 1;
                    Err(self.unexpected())
                }
            };
        }
        let op = match self.next() {
            Some(Tok::Op(op)) => op,
            _ => {
                self.pos -= 1;
                return Err(self.unexpected());
            }
        };
        let lit = self.literal()?;
        Ok(Cond::Cmp(field, op, lit))
    }
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.clone(),
        Tok::Str(s, _) => format!("'{s}'"),
        Tok::Num(n) => n.clone(),
        Tok::Op(o) => o.clone(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Comma => ",".into(),
    }
}

fn parse(q: &str) -> Result<Query, RestError> {
    let mut p = Parser {
        toks: lex(q)?,
        pos: 0,
    };
    p.expect_kw("SELECT")?;
    let mut count = false;
    let mut fields = Vec::new();
    if p.is_kw("COUNT")
        && p.toks.get(p.pos + 1) == Some(&Tok::LParen)
        && p.toks.get(p.pos + 2) == Some(&Tok::RParen)
    {
        p.pos += 3;
        count = true;
    } else {
        loop {
            fields.push(p.word()?);
            if p.peek() == Some(&Tok::Comma) {
                p.pos += 1;
            } else {
                break;
            }
        }
    }
    p.expect_kw("FROM")?;
    let object = p.word()?;
    let cond = if p.is_kw("WHERE") {
        p.pos += 1;
        Some(p.cond()?)
    } else {
        None
    };
    let order = if p.is_kw("ORDER") {
        p.pos += 1;
        p.expect_kw("BY")?;
        let f = p.word()?;
        let mut desc = false;
        if p.is_kw("ASC") {
            p.pos += 1;
        } else if p.is_kw("DESC") {
            p.pos += 1;
            desc = true;
        }
        let mut nulls_last = desc;
        if p.is_kw("NULLS") {
            p.pos += 1;
            if p.is_kw("FIRST") {
                nulls_last = false;
            } else if p.is_kw("LAST") {
                nulls_last = true;
            } else {
                return Err(p.unexpected());
            }
            p.pos += 1;
        }
        Some((f, desc, nulls_last))
    } else {
        None
    };
    let number = |p: &mut Parser| -> Result<usize, RestError> {
        match p.next() {
            Some(Tok::Num(n)) => n
                .parse()
                .map_err(|_| malformed(format!("unexpected token: '{n}'"))),
            _ => {
                p.pos -= 1;
                Err(p.unexpected())
            }
        }
    };
    let limit = if p.is_kw("LIMIT") {
        p.pos += 1;
        Some(number(&mut p)?)
    } else {
        None
    };
    let offset = if p.is_kw("OFFSET") {
        p.pos += 1;
        number(&mut p)?
    } else {
        0
    };
    if offset > 2000 {
        return Err(RestError::bad(SfError::new(
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Maximum SOQL offset allowed is 2000",
        )));
    }
    if p.peek().is_some() {
        return Err(p.unexpected());
    }
    Ok(Query {
        count,
        fields,
        object,
        cond,
        order,
        limit,
        offset,
    })
}

/// Canonical field name, or `INVALID_FIELD`.
fn resolve(def: &SalesforceObjectDef, name: &str) -> Result<String, RestError> {
    field(def, name)
        .map(|f| f.name.clone())
        .ok_or_else(|| no_such_column(name, &def.name))
}

fn is_textual(t: &T) -> bool {
    matches!(
        t,
        T::String(_)
            | T::TextArea(_)
            | T::Email
            | T::Phone
            | T::Url
            | T::Picklist { .. }
            | T::Reference(_)
            | T::Id
    )
}

fn is_numeric(t: &T) -> bool {
    matches!(t, T::Double | T::Currency | T::Percent | T::Int)
}

/// Resolves field names and checks literal types against field types.
fn check_cond(def: &SalesforceObjectDef, c: &mut Cond) -> Result<(), RestError> {
    let check_lit = |f: &str, lit: &Lit| -> Result<(), RestError> {
        let Some(fd) = field(def, f) else {
            return Ok(());
        };
        let bad = match lit {
            Lit::Null => false,
            Lit::Str(_) => is_numeric(&fd.field_type) || matches!(fd.field_type, T::Boolean),
            Lit::Num(_) => is_textual(&fd.field_type),
            Lit::Bool(_) => !matches!(fd.field_type, T::Boolean),
            // A dateTime literal filters dateTime fields only, a date
            // literal date fields only (as documented).
            Lit::Date(d) if d.contains('T') => {
                if parse_datetime(d).is_none() {
                    return Err(malformed(format!(
                        "value of filter criterion for field '{}' must be of type dateTime: {d} is not a valid dateTime (YYYY-MM-DDThh:mm:ssZ or YYYY-MM-DDThh:mm:ss+hh:mm)",
                        fd.name
                    )));
                }
                !matches!(fd.field_type, T::DateTime)
            }
            Lit::Date(_) => !matches!(fd.field_type, T::Date | T::DateTime),
        };
        if !bad {
            return Ok(());
        }
        let message = if is_textual(&fd.field_type) {
            format!(
                "value of filter criterion for field '{}' must be of type string and should be enclosed in quotes",
                fd.name
            )
        } else {
            format!(
                "value of filter criterion for field '{}' must be of type {} and should not be enclosed in quotes",
                fd.name,
                match fd.field_type {
                    T::Boolean => "boolean",
                    T::Date => "date",
                    T::DateTime => "dateTime",
                    _ => "double",
                }
            )
        };
        Err(RestError::bad(SfError::new("INVALID_FIELD", message)))
    };
    match c {
        Cond::And(a, b) | Cond::Or(a, b) => {
            check_cond(def, a)?;
            check_cond(def, b)
        }
        Cond::Not(a) => check_cond(def, a),
        Cond::Cmp(f, _, lit) => {
            *f = resolve(def, f)?;
            check_lit(f, lit)
        }
        Cond::In(f, lits, _) => {
            *f = resolve(def, f)?;
            lits.iter().try_for_each(|l| check_lit(f, l))
        }
        Cond::Like(f, _) => {
            *f = resolve(def, f)?;
            Ok(())
        }
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn compare_values(v: &Value, lit: &Lit) -> Option<Ordering> {
    match lit {
        Lit::Null => None,
        Lit::Num(n) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|x| x.partial_cmp(n)),
        Lit::Bool(b) => v.as_bool().map(|x| x.cmp(b)),
        Lit::Str(s) => value_text(v).map(|x| x.to_lowercase().cmp(&s.to_lowercase())),
        Lit::Date(d) if d.contains('T') => {
            // A dateTime literal against a dateTime value: compared as
            // instants (the stored form is `...000+0000`, the literal's
            // may be `Z` or `+hh:mm`).
            let x = parse_datetime(v.as_str()?)?;
            Some(x.cmp(&parse_datetime(d)?))
        }
        Lit::Date(d) => v.as_str().map(|x| {
            // A date literal against a datetime compares the date part.
            let x = if d.len() == 10 {
                x.get(..10).unwrap_or(x)
            } else {
                x
            };
            x.cmp(d.as_str())
        }),
    }
}

/// A dateTime as SOQL literals (`1999-01-01T23:01:01Z`, `...+01:00`,
/// optional fraction) and stored values (`...T23:01:01.000+0000`) write it.
fn parse_datetime(s: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
}

fn like(text: &str, pat: &[Pat]) -> bool {
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<Pat> = pat
        .iter()
        .map(|x| {
            if let Pat::Lit(c) = x {
                Pat::Lit(c.to_lowercase().next().unwrap_or(*c))
            } else {
                x.clone()
            }
        })
        .collect();
    // Classic wildcard matching with backtracking on `%`.
    let (mut ti, mut pi) = (0usize, 0usize);
    let (mut star, mut mark) = (None, 0usize);
    while ti < t.len() {
        match p.get(pi) {
            Some(Pat::One) => {
                ti += 1;
                pi += 1;
            }
            Some(Pat::Lit(c)) if *c == t[ti] => {
                ti += 1;
                pi += 1;
            }
            Some(Pat::Many) => {
                star = Some(pi);
                mark = ti;
                pi += 1;
            }
            _ => match star {
                Some(s) => {
                    pi = s + 1;
                    mark += 1;
                    ti = mark;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|x| *x == Pat::Many)
}

fn eval(c: &Cond, r: &SalesforceRecord) -> bool {
    let get = |f: &str| r.fields.get(f).cloned().unwrap_or(Value::Null);
    match c {
        Cond::And(a, b) => eval(a, r) && eval(b, r),
        Cond::Or(a, b) => eval(a, r) || eval(b, r),
        Cond::Not(a) => !eval(a, r),
        Cond::Cmp(f, op, lit) => {
            let v = get(f);
            if matches!(lit, Lit::Null) {
                return match op.as_str() {
                    "=" => v.is_null(),
                    "!=" => !v.is_null(),
                    _ => false,
                };
            }
            let Some(ord) = compare_values(&v, lit) else {
                return op == "!=";
            };
            match op.as_str() {
                "=" => ord == Ordering::Equal,
                "!=" => ord != Ordering::Equal,
                "<" => ord == Ordering::Less,
                "<=" => ord != Ordering::Greater,
                ">" => ord == Ordering::Greater,
                ">=" => ord != Ordering::Less,
                _ => false,
            }
        }
        Cond::In(f, lits, negated) => {
            let v = get(f);
            let hit = lits.iter().any(|l| {
                if matches!(l, Lit::Null) {
                    v.is_null()
                } else {
                    compare_values(&v, l) == Some(Ordering::Equal)
                }
            });
            hit != *negated
        }
        Cond::Like(f, pat) => value_text(&get(f)).is_some_and(|t| like(&t, pat)),
    }
}

fn order_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => value_text(a)
            .unwrap_or_default()
            .to_lowercase()
            .cmp(&value_text(b).unwrap_or_default().to_lowercase()),
    }
}

/// `GET query?q=...`
pub(crate) fn run(
    state: &SalesforceState,
    store: &mut Store,
    version: &str,
    q: &str,
) -> Result<Value, RestError> {
    let mut query = parse(q)?;
    let Some(def) = state.object(&query.object) else {
        return Err(RestError::bad(SfError::new(
            "INVALID_TYPE",
            format!(
                "sObject type '{}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.",
                query.object
            ),
        )));
    };
    let fields: Vec<String> = query
        .fields
        .iter()
        .map(|f| resolve(def, f))
        .collect::<Result<_, _>>()?;
    if let Some(c) = query.cond.as_mut() {
        check_cond(def, c)?;
    }
    if let Some((f, _, _)) = query.order.as_mut() {
        *f = resolve(def, f)?;
    }
    let mut hits: Vec<&SalesforceRecord> = store
        .of(&def.name)
        .filter(|r| query.cond.as_ref().is_none_or(|c| eval(c, r)))
        .collect();
    if let Some((f, desc, nulls_last)) = &query.order {
        hits.sort_by(|a, b| {
            let (va, vb) = (
                a.fields.get(f).cloned().unwrap_or(Value::Null),
                b.fields.get(f).cloned().unwrap_or(Value::Null),
            );
            match (va.is_null(), vb.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if *nulls_last {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, true) => {
                    if *nulls_last {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                _ => {
                    let o = order_values(&va, &vb);
                    if *desc { o.reverse() } else { o }
                }
            }
        });
    }
    let selected: Vec<&SalesforceRecord> = hits
        .into_iter()
        .skip(query.offset)
        .take(query.limit.unwrap_or(usize::MAX))
        .collect();
    if query.count {
        return Ok(json!({"totalSize": selected.len(), "done": true, "records": []}));
    }
    let records: Vec<Value> = selected
        .iter()
        .map(|r| record_json(r, version, Some(&fields)))
        .collect();
    let batch = state.inner.config.query_batch_size.max(1);
    if records.len() <= batch {
        return Ok(json!({"totalSize": records.len(), "done": true, "records": records}));
    }
    // More than one batch: the rest waits behind a query locator, read
    // with `GET query/{locator}-{offset}` (the result set as it was).
    let n = store.next();
    let locator = format!("01g5e{n:010}AAA");
    let page = locator_page(version, &locator, &records, 0, batch);
    store.locators.insert(locator, records);
    while store.locators.len() > MAX_LOCATORS {
        let oldest = store.locators.keys().next().cloned().unwrap_or_default();
        store.locators.remove(&oldest);
    }
    Ok(page)
}

/// Open query cursors kept (Salesforce allows 10 per user and object…
/// and expires them; the fake forgets the oldest).
const MAX_LOCATORS: usize = 50;

fn locator_page(
    version: &str,
    locator: &str,
    records: &[Value],
    offset: usize,
    batch: usize,
) -> Value {
    let end = (offset + batch).min(records.len());
    let mut out = json!({
        "totalSize": records.len(),
        "done": end == records.len(),
        "records": records[offset.min(end)..end],
    });
    if end < records.len() {
        out["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}-{end}"));
    }
    out
}

/// `GET query/{locator}-{offset}`: the next batch of a query.
pub(crate) fn more(
    state: &SalesforceState,
    store: &Store,
    version: &str,
    cursor: &str,
) -> Result<Value, RestError> {
    let invalid = || {
        RestError::bad(SfError::new(
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        ))
    };
    let (locator, offset) = cursor.rsplit_once('-').ok_or_else(invalid)?;
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    let records = store.locators.get(locator).ok_or_else(invalid)?;
    if offset >= records.len() {
        return Err(invalid());
    }
    let batch = state.inner.config.query_batch_size.max(1);
    Ok(locator_page(version, locator, records, offset, batch))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn escapes_and_like_patterns() {
        let toks =
            lex(r"SELECT Id FROM Lead WHERE LastName = 'O\'Brien' AND Company LIKE 'Ac\_me%'")
                .expect("lex");
        assert!(toks.contains(&Tok::Str(
            "O'Brien".into(),
            "O'Brien".chars().map(Pat::Lit).collect()
        )));
        let Some(Tok::Str(_, pat)) = toks.last() else {
            panic!("no pattern")
        };
        assert!(like("ac_me corp", pat));
        assert!(!like("acXme corp", pat));
        assert!(lex(r"SELECT Id FROM Lead WHERE Email = 'a\qb'").is_err());
        assert!(lex("SELECT Id FROM Lead WHERE Email = 'open").is_err());
    }

    #[test]
    fn parses_the_supported_grammar() {
        let q = parse("select Id, Email from Lead where (Email = 'a@b.c' or Status != null) and not IsConverted = true order by CreatedDate desc limit 5 offset 1")
            .expect("parse");
        assert_eq!(q.fields, vec!["Id", "Email"]);
        assert_eq!(q.limit, Some(5));
        assert_eq!(q.offset, 1);
        assert!(parse("SELECT FROM Lead").is_err());
        assert!(parse("SELECT Id FROM Lead LIMIT").is_err());
        assert!(parse("SELECT COUNT() FROM Lead WHERE Email IN ('a', 'b')").is_ok_and(|q| q.count));
    }
}
