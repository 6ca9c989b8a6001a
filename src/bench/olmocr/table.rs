//! Tables as olmocr's `bench/table_parsing.py` sees them: markdown tables (runs of lines with a
//! `|`) and HTML tables, both turned into a grid of cells with rowspans and colspans resolved,
//! and for each cell its neighbours up/down/left/right and its headings.

use std::collections::{BTreeSet, HashMap};

use super::html::{self, Element};
use super::normalize::py_strip;

type Cell = (usize, usize);

pub struct CellSpec {
    pub text: String,
    pub rowspan: usize,
    pub colspan: usize,
    pub is_heading: bool,
}

pub struct Table {
    pub cells: Vec<(Cell, String)>,
    pub headings: BTreeSet<Cell>,
    pub up: HashMap<Cell, BTreeSet<Cell>>,
    pub down: HashMap<Cell, BTreeSet<Cell>>,
    pub left: HashMap<Cell, BTreeSet<Cell>>,
    pub right: HashMap<Cell, BTreeSet<Cell>>,
}

impl Table {
    pub fn text(&self, cell: Cell) -> &str {
        self.cells
            .iter()
            .find(|(c, _)| *c == cell)
            .map_or("", |(_, t)| t.as_str())
    }

    /// The heading cells met walking `relation` from `start` (not `start` itself), or, when
    /// there are none, the cells where the walk ends.
    fn walk_headings(&self, start: Cell, relation: &HashMap<Cell, BTreeSet<Cell>>) -> BTreeSet<Cell> {
        let mut headings = BTreeSet::new();
        let mut ends = BTreeSet::new();
        let mut visited = BTreeSet::new();
        let mut to_visit = vec![start];
        while let Some(cur) = to_visit.pop() {
            if !visited.insert(cur) {
                continue;
            }
            if self.headings.contains(&cur) {
                headings.insert(cur);
            }
            match relation.get(&cur).filter(|r| !r.is_empty()) {
                Some(next) => to_visit.extend(next.iter().copied()),
                None => {
                    ends.insert(cur);
                }
            }
        }
        headings.remove(&start);
        ends.remove(&start);
        if headings.is_empty() {
            ends
        } else {
            headings
        }
    }

    pub fn top_headings(&self, cell: Cell) -> BTreeSet<Cell> {
        self.walk_headings(cell, &self.up)
    }

    pub fn left_headings(&self, cell: Cell) -> BTreeSet<Cell> {
        self.walk_headings(cell, &self.left)
    }
}

/// `_build_table_data_from_specs`: lays the cells out on a grid (a rowspan keeps its columns
/// taken in the rows below) and links each cell to the nearest other cell in each direction.
pub fn build(rows: &[Vec<CellSpec>]) -> Option<Table> {
    let mut cells: Vec<(Cell, String)> = Vec::new();
    let mut headings = BTreeSet::new();
    let mut spans: Vec<(Cell, usize, usize)> = Vec::new();
    let mut occupancy: Vec<Vec<Option<Cell>>> = Vec::new();
    let mut active: Vec<Option<(Cell, usize)>> = Vec::new();

    for (row_idx, specs) in rows.iter().enumerate() {
        let mut entries = Vec::new();
        let mut col = 0;
        let mut next_spec = specs.iter();
        let mut pending = next_spec.next();
        while pending.is_some() || col < active.len() {
            if let Some(Some((id, remaining))) = active.get(col).copied() {
                entries.push(Some(id));
                active[col] = (remaining > 1).then_some((id, remaining - 1));
                col += 1;
                continue;
            }
            let Some(spec) = pending else {
                if col < active.len() {
                    entries.push(None);
                    col += 1;
                    continue;
                }
                break;
            };
            pending = next_spec.next();
            let (rowspan, colspan) = (spec.rowspan.max(1), spec.colspan.max(1));
            let id = (row_idx, col);
            cells.push((id, spec.text.clone()));
            if spec.is_heading {
                headings.insert(id);
            }
            spans.push((id, rowspan, colspan));
            if active.len() < col + colspan {
                active.resize(col + colspan, None);
            }
            for slot in &mut active[col..col + colspan] {
                entries.push(Some(id));
                *slot = (rowspan > 1).then_some((id, rowspan - 1));
            }
            col += colspan;
        }
        occupancy.push(entries);
    }
    while active.iter().any(Option::is_some) {
        let entries = active
            .iter_mut()
            .map(|slot| {
                let (id, remaining) = (*slot)?;
                *slot = (remaining > 1).then_some((id, remaining - 1));
                Some(id)
            })
            .collect();
        occupancy.push(entries);
    }
    if cells.is_empty() {
        return None;
    }
    let width = occupancy
        .iter()
        .filter_map(|row| row.iter().rposition(Option::is_some))
        .max()?
        + 1;
    for row in &mut occupancy {
        row.resize(width, None);
    }
    let height = occupancy.len();

    let mut table = Table {
        headings,
        up: HashMap::new(),
        down: HashMap::new(),
        left: HashMap::new(),
        right: HashMap::new(),
        cells: Vec::new(),
    };
    let nearest = |id: Cell, positions: &mut dyn Iterator<Item = Cell>| {
        positions
            .map(|(r, c)| occupancy[r][c])
            .find(|n| n.is_some_and(|n| n != id))
            .flatten()
    };
    for &(id, rowspan, colspan) in &spans {
        let (r0, c0) = id;
        let (r1, c1) = (r0 + rowspan - 1, c0 + colspan - 1);
        let link = |map: &mut HashMap<Cell, BTreeSet<Cell>>, n: Option<Cell>| {
            let set = map.entry(id).or_default();
            set.extend(n);
        };
        for r in r0..=r1.min(height - 1) {
            link(&mut table.right, nearest(id, &mut (c1 + 1..width).map(|c| (r, c))));
            link(&mut table.left, nearest(id, &mut (0..c0).rev().map(|c| (r, c))));
        }
        for c in c0..=c1.min(width - 1) {
            link(&mut table.down, nearest(id, &mut (r1 + 1..height).map(|r| (r, c))));
            link(&mut table.up, nearest(id, &mut (0..r0).rev().map(|r| (r, c))));
        }
    }
    table.cells = cells;
    Some(table)
}

/// `parse_markdown_tables`: every run of two or more lines containing `|` (any other line, a
/// blank one included, ends the run, so rows with text between them are separate tables); the
/// first row and the first column are headings.
pub fn parse_markdown(content: &str) -> Vec<Table> {
    let mut tables = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in py_strip(content).split('\n') {
        if line.contains('|') {
            current.push(line);
            continue;
        }
        tables.extend(markdown_table(&current));
        current.clear();
    }
    tables.extend(markdown_table(&current));
    tables
}

fn markdown_table(lines: &[&str]) -> Option<Table> {
    if lines.len() < 2 {
        return None;
    }
    let is_rule = |s: &str| s.chars().all(|c| "- :".contains(c));
    let separator = lines.iter().position(|l| {
        let content = l.replace('|', "");
        let content = py_strip(&content);
        !content.is_empty() && is_rule(content)
    });
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if Some(i) == separator || (!py_strip(line).is_empty() && line.chars().all(|c| "- :|".contains(c))) {
            continue;
        }
        let mut cells: Vec<&str> = line.split('|').map(py_strip).collect();
        if cells.first() == Some(&"") {
            cells.remove(0);
        }
        if cells.last() == Some(&"") {
            cells.pop();
        }
        if !cells.is_empty() {
            rows.push(cells);
        }
    }
    if rows.is_empty() {
        return None;
    }
    let specs: Vec<Vec<CellSpec>> = rows
        .iter()
        .enumerate()
        .map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(c, text)| CellSpec {
                    text: text.to_string(),
                    rowspan: 1,
                    colspan: 1,
                    is_heading: r == 0 || c == 0,
                })
                .collect()
        })
        .collect();
    build(&specs)
}

/// `_safe_span_int`: a positive integer, else 1.
fn span(value: Option<&str>) -> usize {
    value
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&v| v > 0)
        .map_or(1, |v| v as usize)
}

/// `parse_html_tables`: every `<table>` (nested ones too), its `<tr>` descendants, their `<th>`
/// and `<td>` children; a cell is a heading if it is a `<th>` or inside a `<thead>`.
pub fn parse_html(content: &str) -> Vec<Table> {
    let root = html::parse(content);
    let mut all = Vec::new();
    root.descendants(&mut Vec::new(), &mut all);
    let mut tables = Vec::new();
    for (table, table_ancestors) in all.iter().filter(|(e, _)| e.name == "table") {
        let mut inside = Vec::new();
        table.descendants(&mut Vec::new(), &mut inside);
        let rows: Vec<(&Element, Vec<&str>)> = inside.into_iter().filter(|(e, _)| e.name == "tr").collect();
        if rows.is_empty() {
            continue;
        }
        let total = rows.len();
        let specs: Vec<Vec<CellSpec>> = rows
            .iter()
            .enumerate()
            .map(|(row_idx, (row, ancestors))| {
                // A <thead> anywhere above the row: inside the table, or around the table itself.
                let in_thead = ancestors.contains(&"thead") || table_ancestors.contains(&"thead");
                row.children
                    .iter()
                    .filter_map(|n| match n {
                        html::Node::Element(e) if e.name == "th" || e.name == "td" => Some(e),
                        _ => None,
                    })
                    .map(|cell| {
                        let raw_rowspan = cell.attr("rowspan");
                        let mut rowspan = span(raw_rowspan);
                        if raw_rowspan.is_some_and(|v| v.trim() == "0") {
                            rowspan = (total - row_idx).max(1);
                        }
                        CellSpec {
                            text: py_strip(&cell.text()).to_string(),
                            rowspan,
                            colspan: span(cell.attr("colspan")),
                            is_heading: cell.name == "th" || in_thead,
                        }
                    })
                    .collect()
            })
            .collect();
        tables.extend(build(&specs));
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_neighbours_and_headings() {
        let t = &parse_markdown("text\n| A | B |\n|---|---|\n| 1 | 2 |\n| 3 | 4 |\nafter")[0];
        assert_eq!(t.text((1, 1)), "2");
        assert_eq!(t.up[&(1, 1)], BTreeSet::from([(0, 1)]));
        assert_eq!(t.right[&(2, 0)], BTreeSet::from([(2, 1)]));
        assert_eq!(t.top_headings((2, 1)), BTreeSet::from([(0, 1)]));
        assert_eq!(t.left_headings((2, 1)), BTreeSet::from([(2, 0)]));
    }

    fn rows(table: &Table) -> Vec<Vec<String>> {
        let mut rows: Vec<Vec<String>> = Vec::new();
        for ((r, _), text) in &table.cells {
            if rows.len() <= *r {
                rows.resize(r + 1, Vec::new());
            }
            rows[*r].push(text.clone());
        }
        rows
    }

    /// Tables as olmocr's `parse_markdown_tables` cuts them (expected values from it): a blank
    /// line or a paragraph ends a table, a lone row is none, only the first separator-like line
    /// and lines of nothing but `- :|` are dropped, and empty cells keep their place.
    #[test]
    fn markdown_tables_end_where_olmocr_ends_them() {
        let parsed = |content: &str| parse_markdown(content).iter().map(rows).collect::<Vec<_>>();
        assert_eq!(
            parsed("| A | B |\n| 11.8B | x |\nSome text.\n| 3.7B | y |\n| z | w |"),
            [
                vec![vec!["A", "B"], vec!["11.8B", "x"]],
                vec![vec!["3.7B", "y"], vec!["z", "w"]]
            ]
        );
        assert_eq!(parsed("| a | b |\n| 1 | 2 |\n\n| 3 | 4 |\n| 5 | 6 |").len(), 2);
        assert!(parsed("| a | b |\nparagraph\n| c |\n\n| d |").is_empty());
        assert_eq!(
            parsed("|---|---|\n| a | b |\n|:-:|---|\n| 1 | 2 |\n||"),
            [vec![vec!["a", "b"], vec!["1", "2"]]]
        );
        assert_eq!(
            parsed("| x |  |\n| |y|\n  | - | "),
            [vec![vec!["x", ""], vec!["", "y"]]]
        );
        assert_eq!(parsed("a | b\n c | d"), [vec![vec!["a", "b"], vec!["c", "d"]]]);
        let t = &parse_markdown("| A | B |\n| 11.8B | x |\nSome text.\n| 3.7B | y |")[0];
        assert!(t.down[&(1, 0)].is_empty());
    }

    #[test]
    fn html_spans_link_every_covered_neighbour() {
        let t = &parse_html("<table><tr><th colspan=2>H</th></tr><tr><td>a</td><td>b</td></tr></table>")[0];
        assert_eq!(t.down[&(0, 0)], BTreeSet::from([(1, 0), (1, 1)]));
        assert_eq!(t.top_headings((1, 1)), BTreeSet::from([(0, 0)]));
    }
}
