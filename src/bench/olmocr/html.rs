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

/// Parses `html` into a root element named "" holding the document. The tokenizer follows
/// CPython's `html.parser` (3.11, what olmocr's BeautifulSoup ran on) also where markup is
/// broken, as perturbed or truncated model output often is: a start tag ends where its
/// `locatestarttagend_tolerant` pattern ends, `</` not followed by a name is a bogus comment up
/// to the next `>`, and a tag, end tag or comment that never ends is text (up to and with the
/// next `>`, else up to the next `<`) rather than the rest of the document.
pub fn parse(html: &str) -> Element {
    let mut stack = vec![Element {
        name: String::new(),
        attrs: Vec::new(),
        children: Vec::new(),
    }];
    // Decoded text not yet added to the tree. Data that html.parser hands over raw (tags it
    // gives up on) is not entity-decoded: BeautifulSoup turns charref conversion off and
    // decodes entities only where the tokenizer reports them.
    let mut text = String::new();
    let s = html;
    let mut i = 0;
    while i < s.len() {
        let Some(lt) = s[i..].find('<').map(|p| i + p) else {
            text.push_str(&unescape(&s[i..]));
            break;
        };
        text.push_str(&unescape(&s[i..lt]));
        i = lt;
        let after = &s[i + 1..];
        let next = match after.chars().next() {
            Some(c) if c.is_ascii_alphabetic() => start_tag(s, i, &mut stack, &mut text),
            Some('/') => end_tag(s, i).map(|(end, name)| {
                if let Some(name) = name {
                    flush_text(&mut stack, &mut text);
                    if let Some(pos) = stack.iter().rposition(|e| e.name == name).filter(|&p| p > 0) {
                        while stack.len() > pos {
                            close_top(&mut stack);
                        }
                    }
                }
                end
            }),
            Some('!') if after.starts_with("!--") => comment_end(s, i + 4),
            Some('!') if after.get(1..8).is_some_and(|d| d.eq_ignore_ascii_case("doctype")) => {
                s[i + 9..].find('>').map(|p| i + 9 + p + 1)
            }
            // Other declarations (and marked sections) end at the next `>`.
            Some('!') | Some('?') => s[i + 2..].find('>').map(|p| i + 2 + p + 1),
            // A `<` that starts nothing is text.
            _ => {
                text.push('<');
                Some(i + 1)
            }
        };
        i = match next {
            Some(end) => end,
            // Never closed: `goahead(end=True)` makes it text, up to and with the next `>`,
            // else up to the next `<`, else just the `<`.
            None => {
                let end = match s[i + 1..].find('>') {
                    Some(p) => i + 1 + p + 1,
                    None => s[i + 1..].find('<').map_or(i + 1, |p| i + 1 + p),
                };
                text.push_str(&s[i..end]);
                end
            }
        };
    }
    flush_text(&mut stack, &mut text);
    while stack.len() > 1 {
        close_top(&mut stack);
    }
    stack.pop().unwrap()
}

/// `parse_starttag` at the `<` at `i` (a letter follows): the end of what it consumed, or None
/// where the tag is incomplete.
fn start_tag(s: &str, i: usize, stack: &mut Vec<Element>, text: &mut String) -> Option<usize> {
    let endpos = start_tag_end(s, i)?;
    let name_end = tag_name_end(s, i + 1).unwrap();
    let name = s[i + 1..name_end].to_lowercase();
    let mut attrs = Vec::new();
    let mut k = skip_space_slash(s, name_end);
    while k < endpos {
        let Some((attr, value, end)) = attribute_at(s, k) else {
            break;
        };
        // Quotes come off a value only where it both starts and ends with the same one.
        let value = value.map_or(String::new(), |v| {
            let quoted =
                v.len() >= 2 && (v.starts_with('"') && v.ends_with('"') || v.starts_with('\'') && v.ends_with('\''));
            unescape(if quoted { &v[1..v.len() - 1] } else { v })
        });
        attrs.push((attr.to_lowercase(), value));
        k = end;
    }
    let rest = if k <= endpos {
        s[k..endpos].trim_matches(is_space)
    } else {
        ""
    };
    if rest != ">" && rest != "/>" {
        // Junk between the attributes and the end: the whole tag is text.
        text.push_str(&s[i..endpos]);
        return Some(endpos);
    }
    flush_text(stack, text);
    let element = Element {
        name,
        attrs,
        children: Vec::new(),
    };
    if element.name == "script" || element.name == "style" {
        let body = &s[endpos..];
        let lower = body.to_ascii_lowercase();
        let end = lower.find(&format!("</{}", element.name)).unwrap_or(body.len());
        stack.last_mut().unwrap().children.push(Node::Element(element));
        return Some(body[end..].find('>').map_or(s.len(), |gt| endpos + end + gt + 1));
    }
    if rest == "/>" || VOID.contains(&element.name.as_str()) {
        stack.last_mut().unwrap().children.push(Node::Element(element));
    } else {
        stack.push(element);
    }
    Some(endpos)
}

/// `check_for_whole_start_tag`: where `locatestarttagend_tolerant` (the tag name, attributes,
/// whitespace) stops, past a `>` or `/>` there; None (incomplete) at the end of the input or at
/// a letter, `=` or `/`.
fn start_tag_end(s: &str, i: usize) -> Option<usize> {
    let mut j = skip(s, tag_name_end(s, i + 1)?, |c| is_space(c) || c == '/');
    while let Some((_, _, end)) = attribute_at(s, j) {
        j = end;
    }
    j = skip(s, j, is_space);
    match s[j..].chars().next() {
        Some('>') => Some(j + 1),
        Some('/') => s[j..].starts_with("/>").then_some(j + 2),
        Some(c) if c.is_ascii_alphabetic() || c == '=' => None,
        Some(_) => Some(j),
        None => None,
    }
}

/// `parse_endtag` at the `</` at `i`: where it ends and the name it closes (None for a bogus
/// comment or `</>`), or None where no `>` follows.
fn end_tag(s: &str, i: usize) -> Option<(usize, Option<String>)> {
    let gt = i + 1 + s[i + 1..].find('>')?;
    // endtagfind: `</\s*name\s*>`
    let p = skip(s, i + 2, is_space);
    if s[p..].starts_with(|c: char| c.is_ascii_alphabetic()) {
        let e = skip(s, p + 1, |c| c.is_ascii_alphanumeric() || "-.:_".contains(c));
        let q = skip(s, e, is_space);
        if s[q..].starts_with('>') {
            return Some((q + 1, Some(s[p..e].to_lowercase())));
        }
    }
    // The tolerant name, anything after it ignored up to the next `>`.
    if let Some(name_end) = tag_name_end(s, i + 2) {
        let after = skip_space_slash(s, name_end);
        let end = after + s[after..].find('>')? + 1;
        return Some((end, Some(s[i + 2..name_end].to_lowercase())));
    }
    if s[i..].starts_with("</>") {
        return Some((i + 3, None));
    }
    Some((gt + 1, None))
}

/// The end of a comment whose body starts at `body`: past the first `--\s*>`.
fn comment_end(s: &str, body: usize) -> Option<usize> {
    let mut from = body;
    while let Some(p) = s[from..].find("--") {
        let q = skip(s, from + p + 2, is_space);
        if s[q..].starts_with('>') {
            return Some(q + 1);
        }
        from += p + 1;
    }
    None
}

/// Python's `\s` in a str pattern (`str.isspace`): Unicode whitespace and \x1c-\x1f.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

fn skip(s: &str, mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while let Some(c) = s[i..].chars().next().filter(|&c| keep(c)) {
        i += c.len_utf8();
    }
    i
}

/// `(?:\s|/(?!>))*`
fn skip_space_slash(s: &str, mut i: usize) -> usize {
    loop {
        match s[i..].chars().next() {
            Some(c) if is_space(c) => i += c.len_utf8(),
            Some('/') if !s[i + 1..].starts_with('>') => i += 1,
            _ => return i,
        }
    }
}

/// `tagfind_tolerant`'s name at `i`: `[a-zA-Z][^\t\n\r\f />\x00]*`; its end.
fn tag_name_end(s: &str, i: usize) -> Option<usize> {
    s[i..]
        .starts_with(|c: char| c.is_ascii_alphabetic())
        .then(|| skip(s, i + 1, |c| !"\t\n\r\x0c />\0".contains(c)))
}

/// `attrfind_tolerant` at `k`: the attribute's name, its raw value (quotes and all) if it has
/// one, and where the match ends (after the whitespace and lone `/`s that follow).
fn attribute_at(s: &str, k: usize) -> Option<(&str, Option<&str>, usize)> {
    // (?<=['"\s/]) then [^\s/>][^\s/=>]*
    let prev = s[..k].chars().next_back()?;
    if !(prev == '\'' || prev == '"' || prev == '/' || is_space(prev)) {
        return None;
    }
    let first = s[k..]
        .chars()
        .next()
        .filter(|&c| !(is_space(c) || c == '/' || c == '>'))?;
    let name_end = skip(s, k + first.len_utf8(), |c| !(is_space(c) || "/=>".contains(c)));
    let (value, end) = match attribute_value(s, name_end) {
        Some((v, e)) => (Some(v), e),
        None => (None, name_end),
    };
    Some((&s[k..name_end], value, skip_space_slash(s, end)))
}

/// `\s*=+\s*('[^']*'|"[^"]*"|(?!['"])[^>\s]*)` at `i`, with Python's backtracking where the
/// value opens a quote that never closes: a bare value from the last space before it, else from
/// the last of several `=`, else no value at all.
fn attribute_value(s: &str, i: usize) -> Option<(&str, usize)> {
    let eq = skip(s, i, is_space);
    let after_eq = skip(s, eq, |c| c == '=');
    if after_eq == eq {
        return None;
    }
    let v = skip(s, after_eq, is_space);
    let bare = |p: usize| {
        let e = skip(s, p, |c| c != '>' && !is_space(c));
        Some((&s[p..e], e))
    };
    match s[v..].chars().next() {
        Some(q @ ('\'' | '"')) => match s[v + 1..].find(q) {
            Some(p) => Some((&s[v..v + 1 + p + 1], v + 1 + p + 1)),
            None if v > after_eq => {
                let space = s[..v].chars().next_back().unwrap();
                bare(v - space.len_utf8())
            }
            None if after_eq - eq > 1 => bare(after_eq - 1),
            None => None,
        },
        _ => bare(v),
    }
}

fn close_top(stack: &mut Vec<Element>) {
    let top = stack.pop().unwrap();
    stack.last_mut().unwrap().children.push(Node::Element(top));
}

fn flush_text(stack: &mut [Element], text: &mut String) {
    if !text.is_empty() {
        stack
            .last_mut()
            .unwrap()
            .children
            .push(Node::Text(std::mem::take(text)));
    }
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

    /// Each element as BeautifulSoup lists it: name, ancestors below the root, attributes, text.
    fn tree(html: &str) -> Vec<String> {
        let root = parse(html);
        let mut all = Vec::new();
        root.descendants(&mut Vec::new(), &mut all);
        all.iter()
            .map(|(e, up)| format!("{} {:?} {:?} {:?}", e.name, &up[1..], e.attrs, e.text()))
            .collect()
    }

    /// Broken markup as perturbed model output has it, each tree as BeautifulSoup 4.15 with
    /// Python 3.11's html.parser builds it (printed there, in the same form).
    #[test]
    fn broken_tags_recover_as_html_parser_recovers() {
        // `</` and no name: a bogus comment up to the next `>`, which swallows the `<tr`.
        assert_eq!(
            tree("<table><tr><td>a</td><td>b</\n<tr><td>c</td></tr></table>")[3..],
            [r#"td ["table", "tr"] [] "bc""#, r#"td ["table", "tr", "td"] [] "c""#]
        );
        // A start tag or an end tag that never ends is text.
        assert_eq!(
            tree("<table><tr><td>a</td></tr><tr><td colspan=2")[3],
            r#"tr ["table"] [] "<td colspan=2""#
        );
        assert_eq!(tree("<table><tr><td>b</t")[2], r#"td ["table", "tr"] [] "b</t""#);
        // A quote that never closes right after `=`: no value, the tag incomplete, so text up to
        // its `>`; after `= ` the value is empty and the quote starts another attribute.
        assert_eq!(
            tree("<table><tr><td colspan=\"2>x</td><td>y</td></tr></table>")[1..],
            [
                r#"tr ["table"] [] "<td colspan=\"2>xy""#,
                r#"td ["table", "tr"] [] "y""#
            ]
        );
        assert_eq!(
            tree("<table><tr><td colspan= \"2>x</td></tr></table>")[2],
            r#"td ["table", "tr"] [("colspan", ""), ("\"2", "")] "x""#
        );
        // `</ td>` closes the cell; `<b c</td>` is a tag with attributes `c<` and `td`; `/>`
        // after a bare value is part of the value.
        assert_eq!(
            tree("<table><tr><td>a</ td><td>b</td></tr></table>")[2],
            r#"td ["table", "tr"] [] "a""#
        );
        assert_eq!(
            tree("<table><tr><td>a &amp; <b c</td></tr>")[3],
            r#"b ["table", "tr", "td"] [("c<", ""), ("td", "")] """#
        );
        assert_eq!(
            tree("<table><tr><td colspan=2/>x</td></tr></table>")[2],
            r#"td ["table", "tr"] [("colspan", "2/")] "x""#
        );
    }

    /// Every cut of markup with quotes, entities and multi-byte text parses (no slicing inside
    /// a character, no endless loop).
    #[test]
    fn every_cut_parses() {
        let html = "<table><tr><th colspan= \"2\">é &amp; ü</th></tr><!-- c --><tr><td a='x' b==\"y>ß</ td><td/><br/></tr></table>";
        for (at, _) in html.char_indices() {
            parse(&html[..at]);
            parse(&html[at..]);
        }
    }
}
