//! The string similarities olmocr's tests use: rapidfuzz's `fuzz.ratio` and
//! `fuzz.partial_ratio` (Indel similarity, i.e. longest common subsequence, on code points) and
//! the start positions of fuzzysearch's `find_near_matches` (Levenshtein substring search).
//! Scores are computed with the same floating-point operations as rapidfuzz, so thresholds
//! compare identically.

use std::collections::{HashMap, HashSet};

/// A needle prepared for bit-parallel LCS (Hyyrö) against many haystack windows.
struct Needle {
    masks: HashMap<char, Vec<u64>>,
    words: usize,
    len: usize,
}

impl Needle {
    fn new(chars: &[char]) -> Self {
        let words = chars.len().div_ceil(64).max(1);
        let mut masks: HashMap<char, Vec<u64>> = HashMap::new();
        for (i, &c) in chars.iter().enumerate() {
            masks.entry(c).or_insert_with(|| vec![0; words])[i / 64] |= 1 << (i % 64);
        }
        Self {
            masks,
            words,
            len: chars.len(),
        }
    }

    fn lcs(&self, text: &[char]) -> usize {
        if self.len == 0 || text.is_empty() {
            return 0;
        }
        let mut v = vec![u64::MAX; self.words];
        for c in text {
            let Some(m) = self.masks.get(c) else { continue };
            let mut carry = false;
            for (vw, &mw) in v.iter_mut().zip(m) {
                let u = *vw & mw;
                let (sum, c1) = vw.overflowing_add(u);
                let (sum, c2) = sum.overflowing_add(carry as u64);
                carry = c1 || c2;
                *vw = sum | (*vw & !u);
            }
        }
        let mut zeros = 0;
        for (w, vw) in v.iter().enumerate() {
            let bits = (self.len - w * 64).min(64);
            let mask = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            zeros += (!vw & mask).count_ones() as usize;
        }
        zeros
    }

    /// rapidfuzz's normalized Indel similarity in [0, 1].
    fn similarity(&self, text: &[char]) -> f64 {
        let lensum = self.len + text.len();
        if lensum == 0 {
            return 1.0;
        }
        let dist = lensum - 2 * self.lcs(text);
        1.0 - dist as f64 / lensum as f64
    }
}

/// `rapidfuzz.fuzz.ratio`, 0..=100.
pub fn ratio(a: &[char], b: &[char]) -> f64 {
    Needle::new(a).similarity(b) * 100.0
}

/// `rapidfuzz.fuzz.partial_ratio`, 0..=100: the best ratio of the shorter string against any
/// window of the longer one of its length, or a prefix or suffix of it shorter than that.
pub fn partial_ratio(s1: &[char], s2: &[char]) -> f64 {
    if s1.is_empty() && s2.is_empty() {
        return 100.0;
    }
    let (shorter, longer) = if s1.len() <= s2.len() { (s1, s2) } else { (s2, s1) };
    let score = partial_ratio_impl(shorter, longer);
    if score != 100.0 && s1.len() == s2.len() {
        return score.max(partial_ratio_impl(longer, shorter));
    }
    score
}

/// Exhaustive over windows, as rapidfuzz's reference implementation (`fuzz_py`) is; the windows
/// it skips (an edge character absent from the needle) can never score best.
fn partial_ratio_impl(s1: &[char], s2: &[char]) -> f64 {
    let (len1, len2) = (s1.len(), s2.len());
    if len1 == 0 {
        return 0.0;
    }
    let needle = Needle::new(s1);
    let in_needle: HashSet<char> = s1.iter().copied().collect();
    let mut best = 0.0f64;
    let prefixes = (1..len1).filter(|&i| in_needle.contains(&s2[i - 1])).map(|i| (0, i));
    let windows = (0..len2 - len1)
        .filter(|&i| in_needle.contains(&s2[i + len1 - 1]))
        .map(|i| (i, i + len1));
    let suffixes = (len2 - len1..len2)
        .filter(|&i| in_needle.contains(&s2[i]))
        .map(|i| (i, len2));
    for (start, end) in prefixes.chain(windows).chain(suffixes) {
        let sim = needle.similarity(&s2[start..end]);
        if sim > best {
            best = sim;
            if best == 1.0 {
                return 100.0;
            }
        }
    }
    best * 100.0
}

/// Whether `pattern` occurs in `text` with at most `max_dist` Levenshtein edits, and if so the
/// earliest and latest start positions of such occurrences.
///
/// fuzzysearch's `find_near_matches` returns one best match per group of overlapping
/// candidates, so with `max_dist > 0` its extreme starts can lie up to `max_dist` positions
/// inside the ones returned here; an `order` test can differ only when its two texts overlap
/// within that distance.
pub fn near_match_starts(pattern: &[char], text: &[char], max_dist: usize) -> Option<(usize, usize)> {
    let m = pattern.len();
    if m == 0 {
        return None;
    }
    if max_dist == 0 {
        let starts: Vec<usize> = (0..(text.len() + 1).saturating_sub(m))
            .filter(|&i| text[i..i + m] == *pattern)
            .collect();
        return Some((*starts.first()?, *starts.last()?));
    }
    // Reversed pattern against reversed text: a match *ending* at reversed position j starts at
    // text position len - j. Column DP with a free start (Sellers).
    let rp: Vec<char> = pattern.iter().rev().copied().collect();
    let n = text.len();
    let mut col: Vec<usize> = (0..=m).collect();
    let mut starts = Vec::new();
    if col[m] <= max_dist {
        starts.push(n);
    }
    for j in 1..=n {
        let c = text[n - j];
        let mut prev_diag = col[0];
        col[0] = 0;
        for i in 1..=m {
            let old = col[i];
            let sub = prev_diag + usize::from(rp[i - 1] != c);
            col[i] = sub.min(old + 1).min(col[i - 1] + 1);
            prev_diag = old;
        }
        if col[m] <= max_dist {
            starts.push(n - j);
        }
    }
    Some((*starts.iter().min()?, *starts.iter().max()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn ratios_match_rapidfuzz() {
        // Values printed by rapidfuzz 3.14.
        assert_eq!(
            ratio(&chars("this is a test"), &chars("this is a test!")),
            96.55172413793103
        );
        assert_eq!(
            partial_ratio(&chars("cetain"), &chars("a certain string")),
            83.33333333333334
        );
        assert_eq!(partial_ratio(&chars(""), &chars("")), 100.0);
        assert_eq!(partial_ratio(&chars("abc"), &chars("")), 0.0);
        let long: String = "abcdefghij".repeat(10);
        assert_eq!(partial_ratio(&chars(&long), &chars(&format!("xx{long}yy"))), 100.0);
    }

    #[test]
    fn near_matches_allow_edits() {
        let text = chars("the quick brown fox");
        assert_eq!(near_match_starts(&chars("quick"), &text, 0), Some((4, 4)));
        assert_eq!(near_match_starts(&chars("qu1ck"), &text, 0), None);
        assert!(near_match_starts(&chars("qu1ck"), &text, 1).is_some());
    }
}
