//! Just enough of an HTML tree for olmocr's table test, built the way BeautifulSoup's
//! `html.parser` builder builds it: no implied end tags, an end tag closes the most recent open
//! element of its name (and everything opened after it), a stray end tag is ignored, void
//! elements have no children. Text is entity-decoded; comments, doctypes and script/style
//! bodies are not text.

pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

pub enum Node {
    Element(Element),
    Text(String),
}

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
];

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All descendant elements in document order, with their ancestors' names (nearest last).
    pub fn descendants<'a>(&'a self, ancestors: &mut Vec<&'a str>, out: &mut Vec<(&'a Element, Vec<&'a str>)>) {
        ancestors.push(&self.name);
        for child in &self.children {
            if let Node::Element(e) = child {
                out.push((e, ancestors.clone()));
                e.descendants(ancestors, out);
            }
        }
        ancestors.pop();
    }

    /// BeautifulSoup's `get_text(separator="")` after every `<br>` was replaced by a newline.
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.push_text(&mut out);
        out
    }

    fn push_text(&self, out: &mut String) {
        for child in &self.children {
            match child {
                Node::Text(t) => out.push_str(t),
                Node::Element(e) if e.name == "br" => out.push('\n'),
                Node::Element(e) => e.push_text(out),
            }
        }
    }
}

/// Parses `html` into a root element named "" holding the document.
pub fn parse(html: &str) -> Element {
    let mut stack = vec![Element {
        name: String::new(),
        attrs: Vec::new(),
        children: Vec::new(),
    }];
    let mut text = String::new();
    let mut rest = html;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            text.push_str(rest);
            break;
        };
        text.push_str(&rest[..lt]);
        rest = &rest[lt..];
        let after = &rest[1..];
        let starts_letter = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if let Some(comment) = after.strip_prefix("!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
        } else if after.starts_with('!') || after.starts_with('?') {
            rest = after.find('>').map_or("", |end| &after[end + 1..]);
        } else if let Some(end_tag) = after.strip_prefix('/').filter(|s| starts_letter(s)) {
            let close = end_tag.find('>').unwrap_or(end_tag.len());
            let name = tag_name(&end_tag[..close]);
            rest = end_tag.get(close + 1..).unwrap_or("");
            flush_text(&mut stack, &mut text);
            if let Some(pos) = stack.iter().rposition(|e| e.name == name).filter(|&p| p > 0) {
                while stack.len() > pos {
                    close_top(&mut stack);
                }
            }
        } else if starts_letter(after) {
            let close = tag_end(after);
            let inner = &after[..close];
            rest = after.get(close + 1..).unwrap_or("");
            flush_text(&mut stack, &mut text);
            let name = tag_name(inner);
            let self_closing = inner.ends_with('/');
            let element = Element {
                attrs: attributes(&inner[name.len()..]),
                name,
                children: Vec::new(),
            };
            if element.name == "script" || element.name == "style" {
                let lower = rest.to_ascii_lowercase();
                let end = lower.find(&format!("</{}", element.name)).unwrap_or(rest.len());
                rest = rest[end..].find('>').map_or("", |gt| &rest[end + gt + 1..]);
                stack.last_mut().unwrap().children.push(Node::Element(element));
            } else if self_closing || VOID.contains(&element.name.as_str()) {
                stack.last_mut().unwrap().children.push(Node::Element(element));
            } else {
                stack.push(element);
            }
        } else {
            text.push('<');
            rest = after;
        }
    }
    flush_text(&mut stack, &mut text);
    while stack.len() > 1 {
        close_top(&mut stack);
    }
    stack.pop().unwrap()
}

fn close_top(stack: &mut Vec<Element>) {
    let top = stack.pop().unwrap();
    stack.last_mut().unwrap().children.push(Node::Element(top));
}

fn flush_text(stack: &mut [Element], text: &mut String) {
    if !text.is_empty() {
        stack.last_mut().unwrap().children.push(Node::Text(unescape(text)));
        text.clear();
    }
}

fn tag_name(inner: &str) -> String {
    inner
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '>')
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Index of the `>` closing a start tag, skipping quoted attribute values.
fn tag_end(s: &str) -> usize {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '>') => return i,
            _ => {}
        }
    }
    s.len()
}

fn attributes(s: &str) -> Vec<(String, String)> {
    let mut attrs = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' && chars[i] != '/' {
            i += 1;
        }
        if start == i {
            break;
        }
        let name: String = chars[start..i].iter().collect::<String>().to_ascii_lowercase();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                let q = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != q {
                    value.push(chars[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && !chars[i].is_whitespace() {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        attrs.push((name, unescape(&value)));
    }
    attrs
}

/// Python's `html.unescape`, which html.parser applies to text and attribute values: numeric
/// references and the HTML5 named ones.
fn unescape(s: &str) -> String {
    html_escape::decode_html_entities(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_nested_cells_with_breaks_and_entities() {
        let root = parse("x <table><tr><td rowspan='2'>a<br/>b &amp; c&eacute;&#x41;</td><td>d</tr></table>");
        let mut all = Vec::new();
        root.descendants(&mut Vec::new(), &mut all);
        let names: Vec<&str> = all.iter().map(|(e, _)| e.name.as_str()).collect();
        assert_eq!(names, ["table", "tr", "td", "br", "td"]);
        assert_eq!(all[2].0.text(), "a\nb & céA");
        assert_eq!(all[2].0.attr("rowspan"), Some("2"));
        // The unclosed <td> is closed by </tr>, as html.parser's tree builder does.
        assert_eq!(all[4].1, ["", "table", "tr"]);
    }
}
