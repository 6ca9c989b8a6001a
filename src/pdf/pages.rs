//! Page selections as users write them (`1-3,7,10-`): 1-based, inclusive, an open end meaning
//! "to the last page"; pages a document does not have are skipped.

use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRanges(Vec<(usize, Option<usize>)>);

impl FromStr for PageRanges {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let number = |t: &str| -> Result<usize, String> {
            match t.trim().parse::<usize>() {
                Ok(0) | Err(_) => Err(format!("{t:?} in {s:?} is not a page number (pages count from 1)")),
                Ok(n) => Ok(n),
            }
        };
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                None => number(part).map(|n| (n, Some(n))),
                Some((a, b)) => {
                    let first = number(a)?;
                    let last = match b.trim() {
                        "" => None,
                        b => Some(number(b)?),
                    };
                    match last {
                        Some(l) if l < first => Err(format!("{part:?} in {s:?} runs backwards")),
                        _ => Ok((first, last)),
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(ranges))
    }
}

impl PageRanges {
    /// The selected pages of a document of `pages` pages, in order, each once.
    pub fn select(&self, pages: usize) -> Vec<usize> {
        (1..=pages)
            .filter(|p| self.0.iter().any(|&(a, b)| *p >= a && b.is_none_or(|b| *p <= b)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_select_existing_pages_once_in_order() {
        let r: PageRanges = "7, 1-3,2,10-".parse().unwrap();
        assert_eq!(r.select(12), [1, 2, 3, 7, 10, 11, 12]);
        assert_eq!(r.select(2), [1, 2]);
        for bad in ["0", "3-1", "a", "1,,2", ""] {
            assert!(bad.parse::<PageRanges>().is_err(), "{bad}");
        }
    }
}
