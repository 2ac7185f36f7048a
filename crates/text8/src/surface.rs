//! A typed line and the text8-form words a model reads from it, so that the
//! model's words can be put back in the writer's own form: the mirror of
//! `Hello, World!` is `olleH, dlroW!`, of `in 2026.` is `ni 6202.`.
//!
//! - A word is a maximal run of ASCII letters, or of ASCII digits (`abc123`
//!   is two words); everything between words (spaces, punctuation, any other
//!   character) is kept as it was typed.
//! - The model reads the words lower-cased and joined by single spaces, a
//!   digit run as the letters `a`-`j` (digit `d` is letter `d + 1`), so that
//!   it keeps its length (text8's digit names would change it) and is
//!   mirrored like any word.
//! - Back: the model's `i`-th word replaces the `i`-th word; its letter `j`
//!   takes the case of the typed letter it mirrors (position `len - 1 - j`),
//!   and a digit word's letters become digits again.

/// What kind of characters a word is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Letters,
    Digits,
}

/// One word of a line: byte range and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    start: usize,
    end: usize,
    kind: Kind,
}

/// A typed line split into words and the text between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    line: String,
    words: Vec<Word>,
}

fn kind_of(c: u8) -> Option<Kind> {
    if c.is_ascii_alphabetic() {
        Some(Kind::Letters)
    } else if c.is_ascii_digit() {
        Some(Kind::Digits)
    } else {
        None
    }
}

impl Surface {
    /// Splits `line` into words (ASCII only: a non-ASCII letter is kept
    /// between words, as text8 drops it).
    pub fn parse(line: &str) -> Self {
        let bytes = line.as_bytes();
        let mut words = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let Some(kind) = kind_of(bytes[i]) else {
                i += 1;
                continue;
            };
            let start = i;
            while i < bytes.len() && kind_of(bytes[i]) == Some(kind) {
                i += 1;
            }
            words.push(Word {
                start,
                end: i,
                kind,
            });
        }
        Surface {
            line: line.to_string(),
            words,
        }
    }

    /// Number of words.
    pub fn num_words(&self) -> usize {
        self.words.len()
    }

    /// The text8 form the model reads: the words lower-cased (digits as
    /// `a`-`j`) joined by single spaces; empty when the line has no word.
    pub fn text8(&self) -> String {
        let mut out = String::with_capacity(self.line.len());
        for (k, w) in self.words.iter().enumerate() {
            if k > 0 {
                out.push(' ');
            }
            for &c in &self.line.as_bytes()[w.start..w.end] {
                out.push(match w.kind {
                    Kind::Letters => c.to_ascii_lowercase() as char,
                    Kind::Digits => (b'a' + (c - b'0')) as char,
                });
            }
        }
        out
    }

    /// The line with its words replaced by the words of `model_output` (text8
    /// form, words between single spaces), in the typed form. Words the
    /// model left out leave their place empty; extra ones are appended after
    /// a space, so nothing the model wrote is lost.
    pub fn restore(&self, model_output: &str) -> String {
        let mut written = model_output.split(' ');
        let mut out = String::with_capacity(self.line.len() + 8);
        let mut at = 0;
        for w in &self.words {
            out.push_str(&self.line[at..w.start]);
            let typed = &self.line.as_bytes()[w.start..w.end];
            if let Some(m) = written.next() {
                for (j, c) in m.bytes().enumerate() {
                    let mirrored = typed.len().checked_sub(j + 1).map(|p| typed[p]);
                    out.push(restore_char(c, w.kind, mirrored));
                }
            }
            at = w.end;
        }
        out.push_str(&self.line[at..]);
        for extra in written.filter(|m| !m.is_empty()) {
            out.push(' ');
            out.push_str(extra);
        }
        out
    }
}

/// A model letter `c` in the typed form of the character it mirrors.
fn restore_char(c: u8, kind: Kind, mirrored: Option<u8>) -> char {
    match kind {
        Kind::Digits if (b'a'..=b'j').contains(&c) => (b'0' + (c - b'a')) as char,
        Kind::Letters if mirrored.is_some_and(|t| t.is_ascii_uppercase()) => {
            c.to_ascii_uppercase() as char
        }
        _ => c as char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a perfect model writes for a text8-form input.
    fn mirror(text8: &str) -> String {
        text8
            .split(' ')
            .map(|w| w.chars().rev().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn round_trip(line: &str) -> String {
        let s = Surface::parse(line);
        s.restore(&mirror(&s.text8()))
    }

    proptest::proptest! {
        /// With a perfect model every word comes back exactly reversed (case
        /// travels with its letter) and everything else exactly in place.
        #[test]
        fn a_perfect_mirror_reverses_each_typed_word(line in "(\\PC|[a-zA-Z0-9]){0,80}") {
            let mut want = String::new();
            let mut word = String::new();
            let mut kind = None;
            for c in line.chars() {
                let k = kind_of(if c.is_ascii() { c as u8 } else { b' ' });
                if k.is_none() || k != kind {
                    want.extend(word.chars().rev());
                    word.clear();
                }
                kind = k;
                if k.is_some() { word.push(c) } else { want.push(c) }
            }
            want.extend(word.chars().rev());
            proptest::prop_assert_eq!(round_trip(&line), want);
        }
    }

    #[test]
    fn case_punctuation_digits_and_spacing_come_back() {
        assert_eq!(round_trip("Hello, World!"), "olleH, dlroW!");
        assert_eq!(round_trip("in 2026."), "ni 6202.");
        assert_eq!(round_trip("  NASA's  iPhone\t3G "), "  ASAN's  enohPi\t3G ");
        assert_eq!(round_trip("abc123def"), "cba321fed");
        assert_eq!(round_trip("café au lait"), "fac\u{e9} ua tial");
        assert_eq!(round_trip("...!?"), "...!?");
        assert_eq!(round_trip(""), "");
    }

    #[test]
    fn the_model_reads_text8_form() {
        let s = Surface::parse("Hello, World 2!");
        assert_eq!(s.text8(), "hello world c");
        assert_eq!(s.num_words(), 3);
        assert_eq!(Surface::parse("!!").text8(), "");
    }

    #[test]
    fn a_wrong_model_output_is_shown_not_lost() {
        let s = Surface::parse("Hi, you");
        // a word missing, then extra words
        assert_eq!(s.restore("iH"), "iH, ");
        assert_eq!(s.restore("iH uoy xx yy"), "iH, uoy xx yy");
        // a longer word than typed: letter j still takes the case of typed letter len - 1 - j
        assert_eq!(s.restore("iiH uoy"), "iIH, uoy");
    }
}
