//! A1 notation, as the Sheets API reads and writes it: `Sheet1`, `Sheet1!A1`, `Sheet1!A1:C3`,
//! `Sheet1!A:C`, `Sheet1!1:3`, `Sheet1!A2:C` (open-ended), `'Tab name'!A1:Z` (quotes doubled
//! inside), and `A1:C3` (the first sheet).

/// A range split into its sheet name (if any) and the area text after `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRef {
    /// The sheet name, unquoted. `None` when the text had no `!` and was not quoted: it may be
    /// a sheet name or an area on the first sheet.
    pub sheet: Option<String>,
    /// The part after `!`, or the whole text when there was no sheet; empty for a whole sheet.
    pub area: String,
}

/// A rectangle of cells, 0-based and inclusive; `None` ends are open (to the grid's edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub r0: usize,
    pub c0: usize,
    pub r1: Option<usize>,
    pub c1: Option<usize>,
}

impl Area {
    pub const WHOLE: Area = Area {
        r0: 0,
        c0: 0,
        r1: None,
        c1: None,
    };
}

/// Splits `text` into sheet and area. `None` if the quoting is broken.
pub fn split(text: &str) -> Option<RangeRef> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('\'') {
        let mut name = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    chars.next();
                    name.push('\'');
                    continue;
                }
                let after = &rest[i + 1..];
                return if after.is_empty() {
                    Some(RangeRef {
                        sheet: Some(name),
                        area: String::new(),
                    })
                } else {
                    after.strip_prefix('!').map(|area| RangeRef {
                        sheet: Some(name),
                        area: area.to_string(),
                    })
                };
            }
            name.push(c);
        }
        return None;
    }
    match text.rsplit_once('!') {
        Some((sheet, area)) => Some(RangeRef {
            sheet: Some(sheet.to_string()),
            area: area.to_string(),
        }),
        None => Some(RangeRef {
            sheet: None,
            area: text.to_string(),
        }),
    }
}

/// A column index from letters: `A` → 0, `Z` → 25, `AA` → 26.
fn column_index(letters: &str) -> Option<usize> {
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    let mut n: usize = 0;
    for c in letters.chars() {
        let c = c.to_ascii_uppercase();
        if !c.is_ascii_uppercase() {
            return None;
        }
        n = n * 26 + (c as usize - 'A' as usize + 1);
    }
    Some(n - 1)
}

/// Column letters for an index: 0 → `A`, 26 → `AA`.
pub fn column_letters(index: usize) -> String {
    let mut n = index + 1;
    let mut out = Vec::new();
    while n > 0 {
        let rem = (n - 1) % 26;
        out.push((b'A' + rem as u8) as char);
        n = (n - 1) / 26;
    }
    out.iter().rev().collect()
}

/// One end of an area: `A1`, `A` or `1`.
fn endpoint(text: &str) -> Option<(Option<usize>, Option<usize>)> {
    let text = text.trim().replace('$', "");
    let split = text
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(text.len());
    let (letters, digits) = text.split_at(split);
    let col = if letters.is_empty() {
        None
    } else {
        Some(column_index(letters)?)
    };
    let row = if digits.is_empty() {
        None
    } else {
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let n: usize = digits.parse().ok()?;
        if n == 0 {
            return None;
        }
        Some(n - 1)
    };
    if col.is_none() && row.is_none() {
        return None;
    }
    Some((col, row))
}

/// Parses the area after `!`: empty (whole sheet), a cell, or `start:end`.
pub fn parse_area(text: &str) -> Option<Area> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Area::WHOLE);
    }
    match text.split_once(':') {
        None => {
            let (col, row) = endpoint(text)?;
            let (col, row) = (col?, row?);
            Some(Area {
                r0: row,
                c0: col,
                r1: Some(row),
                c1: Some(col),
            })
        }
        Some((start, end)) => {
            let (sc, sr) = endpoint(start)?;
            let (ec, er) = endpoint(end)?;
            // A row range (`1:3`) cannot end in a column, nor a column range start in a row only.
            if sc.is_none() && ec.is_some() {
                return None;
            }
            let mut area = Area {
                r0: sr.unwrap_or(0),
                c0: sc.unwrap_or(0),
                r1: er,
                c1: ec,
            };
            if let Some(r1) = area.r1
                && r1 < area.r0
            {
                area.r1 = Some(area.r0);
                area.r0 = r1;
            }
            if let Some(c1) = area.c1
                && c1 < area.c0
            {
                area.c1 = Some(area.c0);
                area.c0 = c1;
            }
            Some(area)
        }
    }
}

/// A sheet name as the API prints it in ranges: bare when it is a plain word, else quoted.
pub fn quote_sheet(name: &str) -> String {
    let plain = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && parse_area(name).is_none();
    if plain {
        name.to_string()
    } else {
        format!("'{}'", name.replace('\'', "''"))
    }
}

/// Always-quoted sheet name, as in grid-limit error messages.
pub fn always_quoted(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

/// `Sheet1!A1:C3`, or `Sheet1!A1` for a single cell.
pub fn format_range(sheet: &str, r0: usize, c0: usize, r1: usize, c1: usize) -> String {
    format!("{}!{}", quote_sheet(sheet), format_cells(r0, c0, r1, c1))
}

/// `A1:C3`, or `A1` for a single cell.
pub fn format_cells(r0: usize, c0: usize, r1: usize, c1: usize) -> String {
    let start = format!("{}{}", column_letters(c0), r0 + 1);
    if r0 == r1 && c0 == c1 {
        start
    } else {
        format!("{start}:{}{}", column_letters(c1), r1 + 1)
    }
}

/// The area as written in A1, keeping open ends open (`A2:C`, `A:C`).
pub fn format_area(area: &Area) -> String {
    let start = format!("{}{}", column_letters(area.c0), area.r0 + 1);
    match (area.r1, area.c1) {
        (Some(r1), Some(c1)) => format_cells(area.r0, area.c0, r1, c1),
        (None, Some(c1)) if area.r0 == 0 => {
            format!("{}:{}", column_letters(area.c0), column_letters(c1))
        }
        (None, Some(c1)) => format!("{start}:{}", column_letters(c1)),
        (Some(r1), None) if area.c0 == 0 => format!("{}:{}", area.r0 + 1, r1 + 1),
        (Some(r1), None) => format!("{start}:{}", r1 + 1),
        (None, None) => start,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn splits_sheet_and_area() {
        assert_eq!(
            split("Sheet1"),
            Some(RangeRef {
                sheet: None,
                area: "Sheet1".into()
            })
        );
        assert_eq!(
            split("Sheet1!A1:Z"),
            Some(RangeRef {
                sheet: Some("Sheet1".into()),
                area: "A1:Z".into()
            })
        );
        assert_eq!(
            split("'Tab name'!A:Z"),
            Some(RangeRef {
                sheet: Some("Tab name".into()),
                area: "A:Z".into()
            })
        );
        assert_eq!(
            split("'It''s'"),
            Some(RangeRef {
                sheet: Some("It's".into()),
                area: String::new()
            })
        );
        assert_eq!(split("'broken"), None);
        assert_eq!(split("'x'y"), None);
    }

    #[test]
    fn parses_areas() {
        assert_eq!(parse_area(""), Some(Area::WHOLE));
        assert_eq!(
            parse_area("B3"),
            Some(Area {
                r0: 2,
                c0: 1,
                r1: Some(2),
                c1: Some(1)
            })
        );
        assert_eq!(
            parse_area("A1:C3"),
            Some(Area {
                r0: 0,
                c0: 0,
                r1: Some(2),
                c1: Some(2)
            })
        );
        assert_eq!(
            parse_area("A:Z"),
            Some(Area {
                r0: 0,
                c0: 0,
                r1: None,
                c1: Some(25)
            })
        );
        assert_eq!(
            parse_area("A2:Z"),
            Some(Area {
                r0: 1,
                c0: 0,
                r1: None,
                c1: Some(25)
            })
        );
        assert_eq!(
            parse_area("2:5"),
            Some(Area {
                r0: 1,
                c0: 0,
                r1: Some(4),
                c1: None
            })
        );
        assert_eq!(
            parse_area("$A$1:$B$2"),
            Some(Area {
                r0: 0,
                c0: 0,
                r1: Some(1),
                c1: Some(1)
            })
        );
        assert_eq!(
            parse_area("C3:A1"),
            Some(Area {
                r0: 0,
                c0: 0,
                r1: Some(2),
                c1: Some(2)
            })
        );
        assert_eq!(
            parse_area("AA10"),
            Some(Area {
                r0: 9,
                c0: 26,
                r1: Some(9),
                c1: Some(26)
            })
        );
        for bad in ["A", "5", "A0", "Sheet1", "A1:", "1:B", "A1B", "ZZZZ1"] {
            assert_eq!(parse_area(bad), None, "{bad}");
        }
    }

    #[test]
    fn formats_ranges() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(format_range("Sheet1", 0, 0, 2, 3), "Sheet1!A1:D3");
        assert_eq!(format_range("Tab name", 3, 0, 3, 0), "'Tab name'!A4");
        assert_eq!(format_range("A1", 0, 0, 0, 0), "'A1'!A1");
        assert_eq!(
            format_area(&Area {
                r0: 1,
                c0: 0,
                r1: None,
                c1: Some(25)
            }),
            "A2:Z"
        );
        assert_eq!(
            format_area(&Area {
                r0: 0,
                c0: 0,
                r1: None,
                c1: Some(2)
            }),
            "A:C"
        );
    }
}
