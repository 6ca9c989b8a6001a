//! Character and word error rates: edit distance over the reference's length.

fn edit_distance<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Edits per reference character (1 when the reference is empty and the output is not).
pub fn cer(output: &str, reference: &str) -> f64 {
    let (o, r): (Vec<char>, Vec<char>) = (output.chars().collect(), reference.chars().collect());
    edit_distance(&o, &r) as f64 / r.len().max(1) as f64
}

/// Edits per reference word (words split on whitespace).
pub fn wer(output: &str, reference: &str) -> f64 {
    let (o, r): (Vec<&str>, Vec<&str>) = (
        output.split_whitespace().collect(),
        reference.split_whitespace().collect(),
    );
    edit_distance(&o, &r) as f64 / r.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_edits_per_reference_unit() {
        assert_eq!(cer("kitten", "sitting"), 3.0 / 7.0);
        assert_eq!(cer("same", "same"), 0.0);
        assert_eq!(wer("the cat sat", "the cat sat down"), 0.25);
    }
}
