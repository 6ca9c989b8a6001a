//! Is a text layer language? A font with a broken encoding yields text that pdfium reads without
//! complaint and that is not language at all ("Oqnbddchmfr ne sgd" for "Proceedings of the": every
//! letter shifted). Two cheap signals over a page's Latin-script words catch it without a
//! language model: the share of the commonest function words of the major Latin-script
//! languages (a third or more of running text; almost none in shifted text), and the share of
//! words with a vowel (nearly all in any of those languages; a shift turns vowels into
//! consonants). Pages with few Latin words (other scripts, tables of numbers) are not judged.

use std::collections::HashSet;
use std::sync::OnceLock;

/// English, German, French, Spanish, Italian, Portuguese and Dutch function words (not French
/// "ne": it is what "of" becomes when every letter is shifted back by one).
const FUNCTION_WORDS: &str =
    "the of and to in is that for it as was with be by on not he this are or his from at which \
    but have an they you were her she there been one all we their its has will would so no if out also can into than \
    them only other these may do any our such de la le et les des en un une du est pour que qui dans par au sur pas \
    plus se ce il sont avec son ou mais der die und den von zu das mit sich auf für ist im dem nicht ein eine als \
    auch es werden aus er hat dass sie nach wird bei einer um am sind noch wie einem über einen zum war haben nur oder \
    el los las del y con por para una su al lo como más pero sus ha me si sin sobre este entre todo esta ser di che è \
    non sono da nel della dei delle alla gli ma anche più os as do da dos das em no na um uma com não ao mais foi het \
    een van op te zijn voor met niet aan om dan bij uit";

const VOWELS: &str = "aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ";

fn function_words() -> &'static HashSet<&'static str> {
    static WORDS: OnceLock<HashSet<&'static str>> = OnceLock::new();
    WORDS.get_or_init(|| FUNCTION_WORDS.split_whitespace().collect())
}

/// Counts over a page's Latin-script words of two letters or more.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WordCounts {
    pub words: u32,
    pub function_words: u32,
    pub with_vowel: u32,
}

/// Fewer Latin words than this and the page is not judged.
const MIN_WORDS: u32 = 20;

impl WordCounts {
    pub fn of(text: &str) -> Self {
        let mut counts = Self::default();
        for word in text.split(|c: char| !c.is_alphabetic()) {
            // Latin script up to Latin Extended-B; other scripts are left alone.
            if word.chars().count() < 2 || word.chars().any(|c| c as u32 >= 0x250) {
                continue;
            }
            let lower = word.to_lowercase();
            counts.words += 1;
            counts.function_words += function_words().contains(lower.as_str()) as u32;
            counts.with_vowel += lower.chars().any(|c| VOWELS.contains(c)) as u32;
        }
        counts
    }

    /// Enough Latin words, almost no function words and too few vowels: not language.
    pub fn not_language(&self) -> bool {
        self.words >= MIN_WORDS
            && (self.function_words as f32) < 0.05 * self.words as f32
            && (self.with_vowel as f32) < 0.85 * self.words as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_letters_are_not_language_and_real_text_is() {
        let english = "Proceedings of the 62nd Annual Meeting of the Association for Computational \
            Linguistics. Volume 1: Long Papers, pages 15725 to 15788. Dolma is an open corpus of \
            three trillion tokens for language model pretraining research, and it is documented.";
        // Every letter one before its own, `a` to `Z`, as dolma-page-1.pdf's broken font left it.
        let shifted: String = english
            .chars()
            .map(|c| match c {
                'b'..='z' | 'B'..='Z' => (c as u8 - 1) as char,
                'a' | 'A' => 'Z',
                c => c,
            })
            .collect();
        assert!(!WordCounts::of(english).not_language());
        assert!(WordCounts::of(&shifted).not_language(), "{shifted}");
        let german = "Die Ergebnisse der Untersuchung zeigen, dass die Methode auch bei großen \
            Datenmengen zuverlässig arbeitet und sich für den Einsatz in der Praxis eignet.";
        assert!(!WordCounts::of(german).not_language());
        assert!(!WordCounts::of("Тексты на русском языке не оцениваются этим правилом вовсе").not_language());
    }
}
