//! The string similarities olmocr's tests use: rapidfuzz's `fuzz.ratio` and
//! `fuzz.partial_ratio` (Indel similarity, i.e. longest common subsequence, on code points) and
//! fuzzysearch's `find_near_matches` (Levenshtein substring search), each ported as written.
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
    let score = partial_ratio_impl(shorter, longer).0;
    if score != 100.0 && s1.len() == s2.len() {
        return score.max(partial_ratio_impl(longer, shorter).0);
    }
    score
}

/// Where `partial_ratio` finds `needle` in `text`: the (start, end) of the best-scoring window
/// of `text` (all of it when it is the shorter) and its score, 0..=100; `None` when no window
/// shares a character with the needle.
pub fn best_window(needle: &[char], text: &[char]) -> Option<(usize, usize, f64)> {
    if text.len() <= needle.len() {
        let score = partial_ratio(needle, text);
        return (score > 0.0).then_some((0, text.len(), score));
    }
    let (score, window) = partial_ratio_impl(needle, text);
    window.map(|(start, end)| (start, end, score))
}

/// Exhaustive over windows, as rapidfuzz's reference implementation (`fuzz_py`) is; the windows
/// it skips (an edge character absent from the needle) can never score best. Also returns the
/// first best window.
fn partial_ratio_impl(s1: &[char], s2: &[char]) -> (f64, Option<(usize, usize)>) {
    let (len1, len2) = (s1.len(), s2.len());
    if len1 == 0 {
        return (0.0, None);
    }
    let needle = Needle::new(s1);
    let in_needle: HashSet<char> = s1.iter().copied().collect();
    let (mut best, mut best_window) = (0.0f64, None);
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
            (best, best_window) = (sim, Some((start, end)));
            if best == 1.0 {
                return (100.0, best_window);
            }
        }
    }
    (best * 100.0, best_window)
}

/// fuzzysearch's `find_near_matches(pattern, text, max_l_dist=max_dist)`: the (start, end) of
/// each match within `max_dist` Levenshtein edits, overlapping candidates reduced to the best
/// of their group (fewest edits, then longest), sorted.
///
/// fuzzysearch keeps a group in a Python set, so among equally good candidates its pick depends
/// on string hashing, which changes from run to run; here the first one found wins.
pub fn find_near_matches(pattern: &[char], text: &[char], max_dist: usize) -> Vec<(usize, usize)> {
    if pattern.is_empty() {
        return Vec::new();
    }
    if max_dist == 0 {
        return (0..(text.len() + 1).saturating_sub(pattern.len()))
            .filter(|&i| text[i..i + pattern.len()] == *pattern)
            .map(|i| (i, i + pattern.len()))
            .collect();
    }
    let candidates = if pattern.len() / (max_dist + 1) >= 3 {
        ngram_candidates(pattern, text, max_dist)
    } else {
        linear_candidates(pattern, text, max_dist)
    };
    consolidate(candidates)
}

/// A candidate match: start, end, edits.
type Candidate = (usize, usize, usize);

/// `consolidate_overlapping_matches`: candidates that overlap (transitively) form a group; each
/// group keeps its best.
fn consolidate(candidates: Vec<Candidate>) -> Vec<(usize, usize)> {
    // Each group: its span and its members in the order found.
    let mut groups: Vec<(usize, usize, Vec<Candidate>)> = Vec::new();
    for m in candidates {
        let (overlapping, mut rest): (Vec<_>, Vec<_>) = groups.into_iter().partition(|g| !(m.1 <= g.0 || m.0 >= g.1));
        let mut group = (m.0, m.1, vec![m]);
        for (start, end, members) in overlapping {
            group.0 = group.0.min(start);
            group.1 = group.1.max(end);
            group.2.extend(members);
        }
        rest.push(group);
        groups = rest;
    }
    let mut best: Vec<(usize, usize)> = groups
        .iter()
        .map(|(_, _, members)| {
            let m = members
                .iter()
                .min_by_key(|m| (m.2, std::cmp::Reverse(m.1 - m.0)))
                .unwrap();
            (m.0, m.1)
        })
        .collect();
    best.sort();
    best
}

/// `find_near_matches_levenshtein_ngrams`: the pattern cut into `max_dist + 1` pieces, one of
/// which must occur exactly; each occurrence is expanded right, then left.
fn ngram_candidates(pattern: &[char], text: &[char], k: usize) -> Vec<Candidate> {
    let (m, n) = (pattern.len(), text.len());
    let ngram_len = m / (k + 1);
    let mut out = Vec::new();
    for ngram_start in (0..=m - ngram_len).step_by(ngram_len) {
        let ngram_end = ngram_start + ngram_len;
        let ngram = &pattern[ngram_start..ngram_end];
        let before_reversed: Vec<char> = pattern[..ngram_start].iter().rev().copied().collect();
        let after = &pattern[ngram_end..];
        let from = ngram_start.saturating_sub(k).min(n);
        let to = ((n + ngram_end + k).saturating_sub(m)).min(n).max(from);
        for index in
            (from..=to.saturating_sub(ngram_len)).filter(|&i| i + ngram_len <= to && text[i..i + ngram_len] == *ngram)
        {
            let right_text =
                &text[(index + ngram_len).min(n)..(index + m + k - ngram_start).min(n).max((index + ngram_len).min(n))];
            let Some((dist_right, right)) = expand(after, right_text, k) else {
                continue;
            };
            let left_from = (index + dist_right).saturating_sub(ngram_start + k);
            let left_text: Vec<char> = text[left_from.min(index)..index].iter().rev().copied().collect();
            let Some((dist_left, left)) = expand(&before_reversed, &left_text, k - dist_right) else {
                continue;
            };
            out.push((index - left, index + ngram_len + right, dist_left + dist_right));
        }
    }
    out
}

/// `_expand`: the best edit distance of `pattern` against a prefix of `text`, and that
/// prefix's length; fuzzysearch's two variants break ties differently, so both are kept.
fn expand(pattern: &[char], text: &[char], k: usize) -> Option<(usize, usize)> {
    if pattern.is_empty() {
        return Some((0, 0));
    }
    if pattern.len() > (2 * k).max(10) {
        expand_long(pattern, text, k)
    } else {
        expand_short(pattern, text, k)
    }
}

fn expand_short(pattern: &[char], text: &[char], k: usize) -> Option<(usize, usize)> {
    let len = pattern.len();
    let mut scores: Vec<usize> = (1..=len).collect();
    let (mut min_score, mut min_index) = (len, None);
    for (i, &ch) in text.iter().enumerate() {
        let (mut a, mut c) = (i, i + 1);
        for (j, &p) in pattern.iter().enumerate() {
            let b = scores[j];
            c = (a + usize::from(ch != p)).min(b + 1).min(c + 1);
            scores[j] = c;
            a = b;
        }
        if c <= min_score {
            min_score = c;
            min_index = Some(i);
        } else if scores.iter().min().is_some_and(|&s| s >= min_score) {
            break;
        }
    }
    (min_score <= k).then(|| (min_score, min_index.map_or(0, |i| i + 1)))
}

/// `_py_expand_long`: only the band of pattern positions whose scores can still lead to a good
/// enough match is updated.
fn expand_long(pattern: &[char], text: &[char], k: usize) -> Option<(usize, usize)> {
    let len = pattern.len();
    let mut scores: Vec<usize> = (1..=len).collect();
    let (mut min_score, mut min_index) = (len, None);
    let mut max_good = k;
    let (mut next_start, mut next_end): (Option<usize>, isize) = (Some(0), len as isize - 1);
    for (i, &ch) in text.iter().enumerate() {
        let start = next_start.unwrap_or(0);
        let end = len.min((next_end + 1).max(0) as usize);
        let (mut a, mut c) = (i, i + 1);
        if c <= max_good {
            (next_start, next_end) = (Some(0), 0);
        } else {
            (next_start, next_end) = (None, -1);
        }
        for j in start..end {
            let b = scores[j];
            c = (a + usize::from(ch != pattern[j])).min(b + 1).min(c + 1);
            scores[j] = c;
            a = b;
            if c <= max_good {
                next_start.get_or_insert(j);
                next_end = next_end.max((j + 1 + (max_good - c)) as isize);
            }
        }
        if next_start.is_none() {
            break;
        }
        if end == len && c <= min_score {
            min_score = c;
            min_index = Some(i);
            max_good = max_good.min(min_score);
        }
    }
    (min_score <= k).then(|| (min_score, min_index.map_or(0, |i| i + 1)))
}

/// `find_near_matches_levenshtein_linear_programming`, for patterns too short to cut into
/// pieces: candidates start where the text has one of the pattern's first `k + 1` characters
/// and advance by matching, substituting, inserting or skipping.
fn linear_candidates(pattern: &[char], text: &[char], k: usize) -> Vec<Candidate> {
    let m = pattern.len();
    let mut out = Vec::new();
    // Where each of the first k + 1 pattern characters first occurs.
    let first_index = |c: char| pattern[..(k + 1).min(m)].iter().position(|&p| p == c);
    // (start, pattern index, edits)
    let mut candidates: Vec<(usize, usize, usize)> = Vec::new();
    for (index, &ch) in text.iter().enumerate() {
        let mut next = Vec::new();
        if let Some(i) = first_index(ch) {
            if i + 1 == m {
                out.push((index, index + 1, i));
            } else {
                next.push((index, i + 1, i));
            }
        }
        for &(start, i, dist) in &candidates {
            if pattern[i] == ch {
                if i + 1 == m {
                    out.push((start, index + 1, dist));
                } else {
                    next.push((start, i + 1, dist));
                }
                continue;
            }
            if dist == k {
                continue;
            }
            next.push((start, i, dist + 1));
            if index + 1 < text.len() && i + 1 < m {
                next.push((start, i + 1, dist + 1));
            }
            for skipped in 1..=k - dist {
                if i + skipped == m {
                    out.push((start, index + 1, dist + skipped));
                    break;
                } else if pattern[i + skipped] == ch {
                    if i + skipped + 1 == m {
                        out.push((start, index + 1, dist + skipped));
                    } else {
                        next.push((start, i + 1 + skipped, dist + skipped));
                    }
                    break;
                }
            }
        }
        candidates = next;
    }
    for (start, i, dist) in candidates {
        if dist + m - i <= k {
            out.push((start, text.len(), dist + m - i));
        }
    }
    out
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
    fn best_window_is_where_partial_ratio_scores() {
        let (needle, text) = (chars("cetain"), chars("a certain string"));
        let (start, end, score) = best_window(&needle, &text).unwrap();
        assert_eq!(score, partial_ratio(&needle, &text));
        assert_eq!(text[start..end].iter().collect::<String>(), "certai");
        let (needle, text) = (chars("long needle"), chars("needle"));
        assert_eq!(best_window(&needle, &text), Some((0, 6, partial_ratio(&needle, &text))));
        assert_eq!(best_window(&chars("xyz"), &chars("abcdef")), None);
    }

    #[test]
    fn near_matches_match_fuzzysearch() {
        // Values printed by fuzzysearch 0.8.1.
        let text = chars("---PATERN---");
        assert_eq!(find_near_matches(&chars("PATTERN"), &text, 1), [(3, 9)]);
        assert_eq!(find_near_matches(&chars("PATTERN"), &text, 0), []);
        let text = chars("the quick brown fox, the quack");
        assert_eq!(find_near_matches(&chars("quick"), &text, 0), [(4, 9)]);
        assert_eq!(find_near_matches(&chars("qu1ck"), &text, 1), [(4, 9), (25, 30)]);
        assert_eq!(find_near_matches(&chars("abcd"), &chars("xxacdxxx"), 2), [(2, 5)]);
    }
}
