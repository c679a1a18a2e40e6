//! A small, defensive XML reader for SOAP bodies (Salesforce outbound
//! messages): builds an element tree by local name, with hard limits on depth
//! and size, no DTDs and no entity expansion beyond the five predefined
//! entities and character references.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

pub const MAX_DEPTH: usize = 32;
pub const MAX_ELEMENTS: usize = 50_000;

/// One element: its local name (namespace prefix dropped), attributes by
/// local name, its text (trimmed) and its children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text of a child, if present and not empty.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name)
            .map(|c| c.text.as_str())
            .filter(|t| !t.is_empty())
    }

    /// Whether the element is `xsi:nil="true"`.
    pub fn is_nil(&self) -> bool {
        self.attr("nil") == Some("true")
    }
}

/// Parses a document into its root element.
pub fn parse(body: &[u8]) -> Result<Element, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the body is not UTF-8 ({e})"))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("invalid XML at byte {}: {e}", reader.error_position()))?;
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err("content after the root element".into());
            }
            Event::Start(start) => {
                count += 1;
                if stack.len() >= MAX_DEPTH || count > MAX_ELEMENTS {
                    return Err(format!(
                        "the document is deeper than {MAX_DEPTH} or larger than {MAX_ELEMENTS} elements"
                    ));
                }
                stack.push(element(&start)?);
            }
            Event::Empty(start) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(format!(
                        "the document has more than {MAX_ELEMENTS} elements"
                    ));
                }
                close(element(&start)?, &mut stack, &mut root);
            }
            Event::End(_) => match stack.pop() {
                Some(mut done) => {
                    done.text = done.text.trim().to_string();
                    close(done, &mut stack, &mut root);
                }
                None => return Err("unbalanced end tag".into()),
            },
            Event::Text(t) => {
                let piece = t
                    .xml10_content()
                    .map_err(|e| format!("invalid text: {e}"))?;
                push_text(&mut stack, &piece)?;
            }
            Event::CData(c) => {
                let piece = c.decode().map_err(|e| format!("invalid CDATA: {e}"))?;
                push_text(&mut stack, &piece)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("invalid character reference: {e}"))?
                {
                    Some(c) => c,
                    None => {
                        let name = r
                            .decode()
                            .map_err(|e| format!("invalid entity reference: {e}"))?;
                        predefined_entity(&name).ok_or_else(|| {
                            format!("entity &{name}; is not allowed (only the five predefined XML entities are)")
                        })?
                    }
                };
                push_text(&mut stack, resolved.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::DocType(_) => return Err("DTDs (<!DOCTYPE …>) are not accepted".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err("the document ends inside an element".into());
    }
    root.ok_or_else(|| "the document has no root element".into())
}

fn predefined_entity(name: &str) -> Option<char> {
    match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => None,
    }
}

fn push_text(stack: &mut [Element], piece: &str) -> Result<(), String> {
    match stack.last_mut() {
        Some(current) => {
            current.text.push_str(piece);
            Ok(())
        }
        None if piece.trim().is_empty() => Ok(()),
        None => Err("text outside the root element".into()),
    }
}

fn close(done: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(done),
        None => *root = Some(done),
    }
}

fn element(start: &BytesStart<'_>) -> Result<Element, String> {
    let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| format!("invalid attribute on <{name}>: {e}"))?;
        let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("invalid attribute value on <{name}>: {e}"))?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_tree_by_local_name() {
        let doc = br#"<?xml version="1.0"?><a:Root xmlns:a="urn:x"><a:Item kind="x" a:id="1">Smith &amp; Sons &#233;</a:Item><Empty xsi:nil="true" xmlns:xsi="urn:xsi"/><![CDATA[ignored]]></a:Root>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "Root");
        let item = root.child("Item").unwrap();
        assert_eq!(item.text, "Smith & Sons é");
        assert_eq!(item.attr("kind"), Some("x"));
        assert_eq!(item.attr("id"), Some("1"));
        assert!(root.child("Empty").unwrap().is_nil());
    }

    #[test]
    fn rejects_dtds_and_custom_entities() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(parse(xxe).unwrap_err().contains("DTD"));
        assert!(parse(b"<r>&x;</r>").unwrap_err().contains("not allowed"));
    }

    #[test]
    fn rejects_broken_and_deep_documents() {
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"<a/><b/>").is_err());
        assert!(parse(&[0xff, 0xfe]).is_err());
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deeper"));
    }
}
