//! A typed line and the text8-form words a model reads from it, so that the
//! model's words can be put back in the writer's own form: the mirror of
//! `Hello, World!` is `olleH, dlroW!`, of `in 2026.` is `ni 6202.`, of
//! `café covid19` is `éfac 91divoc`.
//!
//! - A word is a maximal run of characters as a reader sees them
//!   (Unicode's extended grapheme clusters: a letter with the accents typed
//!   after it, an Arabic letter with its vowel marks, a Devanagari
//!   syllable with its vowel sign or a conjunct joined by a virama, a
//!   Hangul syllable typed as jamo) that start with a letter or digit of
//!   any script (`char::is_alphanumeric`: `abc123`, `Zürich`, `İstanbul`
//!   and `नमस्ते` are one word each); a character keeps its parts in their
//!   order when the word is mirrored (`كَتَبَ` is `بَتَكَ`, `नमस्ते`
//!   is `स्तेमन`). An apostrophe, soft hyphen or word joiner between two
//!   such characters is part of the word (`don't` is `t'nod`, `NASA's` is
//!   `s'ASAN`). Everything between words (spaces, punctuation, symbols,
//!   emoji, hyphens: `well-known` is `llew-nwonk`) is kept as it was typed.
//! - The model reads each character of a word as one letter `a`-`z` (so a
//!   word keeps its length), the words joined by single spaces: an ASCII
//!   letter lower-cased, digit `d` as letter `d + 1`, any other character as
//!   a letter its code point names. A mirror model mirrors any letters
//!   (made-up words are part of its training), so which letter stands for a
//!   character does not matter, only that it is one.
//! - Back: the model's `i`-th word replaces the `i`-th word; its letter `j`
//!   mirrors the typed character at `len - 1 - j`, and where it is that
//!   character's letter (the model was right) the typed character itself
//!   comes back: its case, its accent, its digit, its script. A letter the
//!   model got wrong is shown, in a word of another script (no ASCII
//!   character in it), as the word's letter that it stands for, if there is
//!   one; else as written, in the case of the typed letter at that place (a
//!   digit's place: as a digit where it can be one).

use unicode_segmentation::UnicodeSegmentation;

/// One word of a line: its byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word {
    start: usize,
    end: usize,
}

/// A typed line split into words and the text between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Surface {
    line: String,
    words: Vec<Word>,
}

/// The characters of a word as a reader sees them (extended grapheme
/// clusters), each with its marks.
fn units(word: &str) -> Vec<&str> {
    word.graphemes(true).collect()
}

/// Whether a character as a reader sees it belongs to a word: it holds a
/// letter or digit (a mark typed after a space or at the start of a line
/// belongs to no letter, and stays where it was typed; a digit after a
/// prepended sign, as Arabic's number sign U+0600, is in its word).
fn in_word(unit: &str) -> bool {
    unit.chars().any(char::is_alphanumeric)
}

/// Whether a character that is no word of its own joins the two words it
/// stands between into one: an apostrophe (`don't`, `O'Brien`,
/// `rock'n'roll`; typed as U+0027 or U+2019) and the invisible soft hyphen
/// and word joiner, which a reader does not see at all.
fn joins_words(unit: &str) -> bool {
    matches!(unit, "'" | "\u{2019}" | "\u{ad}" | "\u{2060}")
}

/// The letter `a`-`z` the model reads for a character of a word.
fn letter_of(c: char) -> u8 {
    match c {
        'a'..='z' => c as u8,
        'A'..='Z' => c.to_ascii_lowercase() as u8,
        '0'..='9' => b'a' + (c as u8 - b'0'),
        _ => b'a' + (c as u32 % 26) as u8,
    }
}

impl Surface {
    /// Splits `line` into words and the text between them.
    pub fn parse(line: &str) -> Self {
        let mut words = Vec::new();
        let mut start = None;
        let mut units = line.grapheme_indices(true).peekable();
        while let Some((i, unit)) = units.next() {
            let joined = start.is_some()
                && joins_words(unit)
                && units.peek().is_some_and(|&(_, u)| in_word(u));
            match (in_word(unit) || joined, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    words.push(Word { start: s, end: i });
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            words.push(Word {
                start: s,
                end: line.len(),
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

    /// The typed characters of `w`.
    fn typed(&self, w: Word) -> &str {
        &self.line[w.start..w.end]
    }

    /// The text8 form the model reads: each word's characters as letters,
    /// the words joined by single spaces; empty when the line has no word.
    pub fn text8(&self) -> String {
        let mut out = String::with_capacity(self.line.len());
        for (k, &w) in self.words.iter().enumerate() {
            if k > 0 {
                out.push(' ');
            }
            out.extend(
                units(self.typed(w))
                    .iter()
                    .map(|u| letter_of(base(u)) as char),
            );
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
        for &w in &self.words {
            out.push_str(&self.line[at..w.start]);
            let typed = units(self.typed(w));
            let foreign = typed
                .iter()
                .filter(|u| in_word(u))
                .all(|u| !base(u).is_ascii());
            if let Some(m) = written.next() {
                for (j, c) in m.chars().enumerate() {
                    // whether the model's letter is the one a typed character reads as
                    let stands_for = |u: &&str| c.is_ascii() && letter_of(base(u)) == c as u8;
                    let mirrored = typed.len().checked_sub(j + 1).map(|p| typed[p]);
                    // wrong here, in a word of another script (no ASCII in it,
                    // where a Latin letter is never right): the word's letter or
                    // digit that the model's letter stands for
                    let elsewhere = || {
                        let mut letters = typed.iter().filter(|u| foreign && in_word(u));
                        letters.find(|u| stands_for(u)).copied()
                    };
                    // the model right (or, as above, right elsewhere): the typed
                    // character, marks and all; else its letter in the typed form
                    match mirrored.filter(stands_for).or_else(elsewhere) {
                        Some(u) => out.push_str(u),
                        None => out.push(restore_char(c, mirrored.map(base))),
                    }
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

/// The first character of a unit (its marks follow it).
fn base(unit: &str) -> char {
    unit.chars().next().expect("a unit is never empty")
}

/// The model's letter `c`, wrong for the typed character `mirrored` at its
/// place, in that character's form: a digit's place as the digit `c`
/// names, an upper-case letter's in upper case.
fn restore_char(c: char, mirrored: Option<char>) -> char {
    match mirrored {
        Some(t) if t.is_ascii_digit() && ('a'..='j').contains(&c) => {
            (b'0' + (c as u8 - b'a')) as char
        }
        Some(t) if t.is_uppercase() => c.to_ascii_uppercase(),
        _ => c,
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
        /// With a perfect model every word (a run of letters and digits of
        /// any script) comes back exactly reversed, and everything else
        /// exactly in place.
        #[test]
        fn a_perfect_mirror_reverses_each_typed_word(
            line in "(\\PC|[a-zA-Z0-9]|\u{200d}|\u{600}|\u{fe0f}\u{20e3}|'|\u{ad}){0,80}"
        ) {
            // the word's characters as a reader sees them, reversed; a
            // joiner with a word's character on either side is one of them
            let mut want = String::new();
            let mut word: Vec<&str> = vec![];
            let units: Vec<&str> = line.graphemes(true).collect();
            for (k, &unit) in units.iter().enumerate() {
                let between = k > 0
                    && in_word(units[k - 1])
                    && units.get(k + 1).is_some_and(|u| in_word(u));
                if in_word(unit) || joins_words(unit) && between {
                    word.push(unit);
                } else {
                    want.extend(word.drain(..).rev());
                    want.push_str(unit);
                }
            }
            want.extend(word.drain(..).rev());
            proptest::prop_assert_eq!(round_trip(&line), want);
        }
    }

    #[test]
    fn case_punctuation_digits_and_spacing_come_back() {
        assert_eq!(round_trip("Hello, World!"), "olleH, dlroW!");
        assert_eq!(round_trip("in 2026."), "ni 6202.");
        assert_eq!(round_trip("  NASA's  iPhone\t3G "), "  s'ASAN  enohPi\tG3 ");
        // an apostrophe or soft hyphen inside a word is part of it; a
        // hyphen, or an apostrophe at a word's end, is not
        assert_eq!(round_trip("don't rock'n'roll"), "t'nod llor'n'kcor");
        assert_eq!(
            round_trip("O\u{2019}Brien dogs' 'twas"),
            "neirB\u{2019}O sgod' 'sawt"
        );
        assert_eq!(
            round_trip("co\u{ad}operate well-known"),
            "etarepo\u{ad}oc llew-nwonk"
        );
        assert_eq!(round_trip("a''b"), "a''b");
        assert_eq!(round_trip("abc123def"), "fed321cba");
        assert_eq!(round_trip("mp3 B52 covid19"), "3pm 25B 91divoc");
        assert_eq!(round_trip("...!?"), "...!?");
        assert_eq!(round_trip(""), "");
    }

    #[test]
    fn letters_of_any_script_are_mirrored_in_place() {
        assert_eq!(
            round_trip("über café naïve résumé Zürich"),
            "rebü éfac evïan émusér hcirüZ"
        );
        assert_eq!(round_trip("straße İstanbul"), "eßarts lubnatsİ");
        assert_eq!(round_trip("Привет, мир! 你好"), "тевирП, рим! 好你");
        // an accent typed as a combining mark stays on its letter
        assert_eq!(round_trip("cafe\u{301} au"), "e\u{301}fac ua");
        assert_eq!(round_trip("\u{301}a"), "\u{301}a");
        // marks of other scripts stay on their letters: Arabic vowels, Devanagari
        // vowel signs and a conjunct joined by a virama, a Thai tone mark,
        // a Hangul syllable typed as jamo
        assert_eq!(round_trip("كَتَبَ"), "بَتَكَ");
        assert_eq!(round_trip("नमस्ते दुनिया"), "स्तेमन यानिदु");
        assert_eq!(round_trip("ไม่"), "ม่ไ");
        assert_eq!(
            round_trip("\u{1112}\u{1161}\u{11ab}\u{1100}\u{1173}"),
            "\u{1100}\u{1173}\u{1112}\u{1161}\u{11ab}"
        );
        // emoji are not letters: kept in place, joined sequences whole
        assert_eq!(
            round_trip("ab👨\u{200d}👩\u{200d}👧cd"),
            "ba👨\u{200d}👩\u{200d}👧dc"
        );
    }

    #[test]
    fn the_model_reads_text8_form() {
        let s = Surface::parse("Hello, World 2!");
        assert_eq!(s.text8(), "hello world c");
        assert_eq!(s.num_words(), 3);
        assert_eq!(Surface::parse("!!").text8(), "");
        // one letter a character, whatever its script: the lengths are kept
        let s = Surface::parse("Zürich, 你好");
        assert_eq!(s.text8().len(), "zurich ab".len());
        assert!(
            s.text8()
                .bytes()
                .all(|b| b == b' ' || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn a_wrong_model_output_is_shown_not_lost() {
        let s = Surface::parse("Hi, you 42");
        // a word missing, then extra words
        assert_eq!(s.restore("ih"), "iH,  ");
        assert_eq!(s.restore("ih uoy ce xx yy"), "iH, uoy 24 xx yy");
        // a wrong letter at a digit's place comes back as the digit it names
        assert_eq!(s.restore("ih uoy cf"), "iH, uoy 25");
        // a wrong letter: as written, in the case of the typed letter there
        // (a digit where the typed character is one); past the typed word as written
        assert_eq!(s.restore("iiq uoy ce"), "iIq, uoy 24");
        assert_eq!(s.restore("ih uoy cz"), "iH, uoy 2z");
        // in a word of another script, a wrong letter that stands for one of
        // the word's characters comes back as that character
        let s = Surface::parse("да");
        let (d, a) = (letter_of('д') as char, letter_of('а') as char);
        assert_eq!(s.restore(&format!("{a}{a}{d}")), "аад");
        let other = (b'a'..=b'z')
            .map(char::from)
            .find(|&c| c != d && c != a)
            .unwrap();
        assert_eq!(s.restore(&format!("{a}{other}")), format!("а{other}"));
        // never a joiner in a letter's place, nor another script's letter in
        // a word with ASCII in it (ü's letter is `s`, the soft hyphen's `r`)
        assert_eq!(letter_of('ü'), b's');
        assert_eq!(Surface::parse("Zürich").restore("hcsrsz"), "hcsrüZ");
        let s = Surface::parse("да\u{ad}да");
        let r = letter_of('\u{ad}') as char;
        assert!(r != a && r != d);
        assert_eq!(
            s.restore(&format!("{a}{d}{r}{r}{d}")),
            format!("ад\u{ad}{r}д")
        );
        // an apostrophe in it leaves a word of another script one (п'ять)
        let ap = letter_of('\'') as char;
        assert_eq!(Surface::parse("д'а").restore(&format!("{a}{ap}{a}")), "а'а");
    }
}
