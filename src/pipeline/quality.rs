//! FinePDFs' repetition detector (datatrove's `RepetitionChecker`), fed the model's output one
//! character at a time. A page whose output repeats itself is bad: it is retried, then falls
//! back to its text layer.
//!
//! The counts are repeats after the first occurrence, as in the reference: a line of at least
//! 8 characters (its newline included) seen 3 more times in a row (9 if it holds a `|`, 12 if
//! it is shorter), a sentence of at least 50 characters (up to its `.`, `?` or `!`) seen 5 more
//! times in a row, or one character repeated 350 more times.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Repetition {
    Line,
    Sentence,
    Char,
}

impl Repetition {
    pub fn as_str(self) -> &'static str {
        match self {
            Repetition::Line => "line",
            Repetition::Sentence => "sentence",
            Repetition::Char => "char",
        }
    }
}

pub struct RepetitionChecker {
    min_line_repetitions: usize,
    min_sentence_repetitions: usize,
    min_char_repetition: usize,
    min_sentence_length: usize,
    min_line_length: usize,
    line: Vec<char>,
    sentence: Vec<char>,
    last_line: Vec<char>,
    last_sentence: Vec<char>,
    last_char: Option<char>,
    line_reps: usize,
    sentence_reps: usize,
    char_reps: usize,
}

impl Default for RepetitionChecker {
    fn default() -> Self {
        Self {
            min_line_repetitions: 3,
            min_sentence_repetitions: 5,
            min_char_repetition: 350,
            min_sentence_length: 50,
            min_line_length: 8,
            line: Vec::new(),
            sentence: Vec::new(),
            last_line: Vec::new(),
            last_sentence: Vec::new(),
            last_char: None,
            line_reps: 0,
            sentence_reps: 0,
            char_reps: 0,
        }
    }
}

impl RepetitionChecker {
    pub fn add_char(&mut self, c: char) -> Option<Repetition> {
        let mut detected = None;
        self.line.push(c);
        self.sentence.push(c);

        if matches!(c, '.' | '?' | '!') {
            if self.sentence.len() >= self.min_sentence_length && self.sentence == self.last_sentence {
                self.sentence_reps += 1;
                if self.sentence_reps >= self.min_sentence_repetitions {
                    detected = Some(Repetition::Sentence);
                }
            } else {
                self.sentence_reps = 0;
            }
            self.last_sentence = std::mem::take(&mut self.sentence);
        }

        if Some(c) == self.last_char {
            self.char_reps += 1;
            if self.char_reps >= self.min_char_repetition {
                detected = Some(Repetition::Char);
            }
        } else {
            self.char_reps = 0;
        }
        self.last_char = Some(c);

        // A line ends at a newline that follows at least one other character; a lone newline
        // (a blank line) leaves the line buffer as it is, as the reference does.
        if c == '\n' && self.line.len() > 2 && self.line[self.line.len() - 2] != '\n' {
            if !self.line.is_empty() && self.line == self.last_line {
                self.line_reps += 1;
                let n = self.min_line_repetitions;
                if self.line_reps >= n
                    && (!self.line.contains(&'|') || self.line_reps >= 3 * n)
                    && (self.line.len() >= self.min_line_length || self.line_reps >= 4 * n)
                {
                    detected = Some(Repetition::Line);
                }
            } else {
                self.line_reps = 0;
            }
            self.last_line = std::mem::take(&mut self.line);
        }
        detected
    }
}

/// The first repetition in `text`, if any.
pub fn find_repetition(text: &str) -> Option<Repetition> {
    let mut checker = RepetitionChecker::default();
    text.chars().find_map(|c| checker.add_char(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(line: &str, times: usize) -> String {
        line.repeat(times)
    }

    #[test]
    fn a_line_of_8_characters_seen_4_times_in_a_row() {
        // "abcdefg\n" is 8 characters with its newline: the 4th occurrence is the 3rd repeat.
        assert_eq!(find_repetition(&lines("abcdefg\n", 3)), None);
        assert_eq!(find_repetition(&lines("abcdefg\n", 4)), Some(Repetition::Line));
        // Broken by another line, the count starts over.
        assert_eq!(
            find_repetition(&format!(
                "{}other line\n{}",
                lines("abcdefg\n", 3),
                lines("abcdefg\n", 3)
            )),
            None
        );
    }

    #[test]
    fn lines_with_a_pipe_need_9_repeats_and_short_lines_12() {
        assert_eq!(find_repetition(&lines("| a | b |\n", 9)), None);
        assert_eq!(find_repetition(&lines("| a | b |\n", 10)), Some(Repetition::Line));
        assert_eq!(find_repetition(&lines("abc\n", 12)), None);
        assert_eq!(find_repetition(&lines("abc\n", 13)), Some(Repetition::Line));
    }

    #[test]
    fn a_sentence_of_50_characters_seen_6_times_in_a_row() {
        let s = "This sentence is long enough to count as a repeat."; // 50 characters
        assert_eq!(s.chars().count(), 50);
        assert_eq!(find_repetition(&s.repeat(5)), None);
        assert_eq!(find_repetition(&s.repeat(6)), Some(Repetition::Sentence));
        let short = "Too short to count.";
        assert_eq!(find_repetition(&short.repeat(40)), None);
    }

    #[test]
    fn one_character_351_times_in_a_row() {
        assert_eq!(find_repetition(&"=".repeat(350)), None);
        assert_eq!(find_repetition(&"=".repeat(351)), Some(Repetition::Char));
    }

    #[test]
    fn ordinary_text_passes() {
        let text = "Edgar was King of the English from 959 until his death in 975.\nHe became king of all England on his brother's death.\n\n| a | b |\n| c | d |\n";
        assert_eq!(find_repetition(text), None);
    }
}
