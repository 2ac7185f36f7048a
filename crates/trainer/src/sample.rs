//! Generating text from a character language model (evaluation is in [`crate::eval`]).

use burn::tensor::Device;
use model::CharLm;
use tokenizer::rng::Rng;
use tokenizer::{CHAR_VOCAB_SIZE, bigram_id, byte_to_id, id_to_byte};

use crate::error::{Result, TrainError};
use crate::recipe::TokenizerKind;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Characters to generate after the prime (or after the random start).
    pub length: usize,
    /// Softmax temperature: 1 samples the model's distribution, lower is
    /// more conservative, 0 always takes the most likely character.
    pub temperature: f64,
    /// Text to start from (lower-case letters and spaces; upper-case is lowered).
    pub prime: Option<String>,
    /// Number of independent samples (generated together, as one batch).
    pub count: usize,
    /// Which characters may be drawn at each step (all, by default).
    pub truncation: Truncation,
}

/// Characters left to draw from at each step: the `top_k` most likely, and
/// of those the smallest set whose probability reaches `top_p` (nucleus
/// sampling, Holtzman et al., arXiv 1904.09751). Neither set: all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Truncation {
    /// Keep only the `k` most likely characters (1: greedy).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely characters with at least this
    /// probability, in (0, 1].
    pub top_p: Option<f64>,
}

/// Whether `p` is a probability mass nucleus sampling takes: above 0, at most 1.
pub fn top_p_in_range(p: f64) -> bool {
    p > 0.0 && p <= 1.0
}

impl Truncation {
    /// Checks the values; the message names the flag.
    pub fn check(&self) -> Result<()> {
        if self.top_k == Some(0) {
            return Err(TrainError::Input("--top-k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !top_p_in_range(p)
        {
            return Err(TrainError::Input(format!(
                "--top-p must be in (0, 1], got {p}"
            )));
        }
        Ok(())
    }

    /// Zeroes the weights of the characters outside the kept set.
    fn apply(&self, weights: &mut [f32]) {
        if self.top_k.is_none() && self.top_p.is_none() {
            return;
        }
        let mut order: Vec<usize> = (0..weights.len()).collect();
        // most likely first; ties by index, so the result is deterministic
        order.sort_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
        let mut keep = self.top_k.unwrap_or(weights.len()).min(weights.len());
        if let Some(p) = self.top_p {
            let total: f64 = order[..keep].iter().map(|&i| weights[i] as f64).sum();
            let mut mass = 0.0;
            for (n, &i) in order[..keep].iter().enumerate() {
                mass += weights[i] as f64;
                if mass >= p * total {
                    keep = n + 1;
                    break;
                }
            }
        }
        for &i in &order[keep.max(1)..] {
            weights[i] = 0.0;
        }
    }
}

/// Ids of a prime text: ASCII letters are lowered, anything else outside
/// `a`-`z` and space is an error naming the character and its position.
pub fn prime_ids(prime: &str) -> Result<Vec<u8>> {
    prime
        .chars()
        .enumerate()
        .map(|(i, c)| {
            u8::try_from(c.to_ascii_lowercase())
                .ok()
                .and_then(byte_to_id)
                .ok_or_else(|| {
                    TrainError::Input(format!(
                        "--prime: character {c:?} at position {i} is not in a-z or space, the \
                         only characters the model knows (--prime-file turns any text into \
                         that form)"
                    ))
                })
        })
        .collect()
}

/// Model input id at position `k` of a character history: the char itself,
/// or the bigram ending at `k` (`history[k - 1], history[k]`).
pub(crate) fn input_id(kind: TokenizerKind, history: &[u8], k: usize) -> i64 {
    match kind {
        TokenizerKind::Char => history[k] as i64,
        TokenizerKind::Bigram => bigram_id(history[k - 1], history[k]) as i64,
    }
}

/// Characters of context a model input needs (1, or 2 for bigrams).
pub fn context_chars(kind: TokenizerKind) -> usize {
    crate::lm::tokenizer_of(kind).context()
}

/// Draws an index from logits at `temperature` (0: the arg max), among the
/// characters `truncation` keeps.
pub fn draw(logits: &[f32], temperature: f64, truncation: &Truncation, rng: &mut Rng) -> usize {
    // a temperature whose inverse is no f32 is the limit: the arg max
    if temperature <= 0.0
        || !((1.0 / temperature) as f32).is_finite()
        || truncation.top_k == Some(1)
    {
        return logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 { (i, l) } else { best }
            })
            .0;
    }
    let inv_t = (1.0 / temperature) as f32;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut weights = [0.0f32; 64];
    if logits.len() <= weights.len() {
        for (w, &l) in weights.iter_mut().zip(logits) {
            *w = model::kernel::exp((l - max) * inv_t);
        }
        truncation.apply(&mut weights[..logits.len()]);
        return rng.weighted(&weights[..logits.len()]);
    }
    let mut weights: Vec<f32> = logits
        .iter()
        .map(|&l| model::kernel::exp((l - max) * inv_t))
        .collect();
    truncation.apply(&mut weights);
    rng.weighted(&weights)
}

/// The notebook's random start: a character drawn from a random distribution
/// (uniform draws, normalised), as its `sample(random_distribution())`.
fn random_start(rng: &mut Rng) -> u8 {
    let weights: Vec<f32> = (0..CHAR_VOCAB_SIZE).map(|_| rng.next_f32()).collect();
    rng.weighted(&weights) as u8
}

pub(crate) use model::ids_tensor;

/// Most characters one [`generate`] call holds (all its texts together).
pub const MAX_SAMPLE_CHARS: usize = 1 << 28;

/// Characters a text starts from without a prime, counted against
/// [`MAX_SAMPLE_CHARS`] with it: a random one, two for bigram models.
pub const START_CHARS: usize = 2;

/// Generates `opts.count` texts. `model` must not be on an autodiff device
/// (use `model.valid()`). Each text is the prime (or a random start of one
/// character, two for bigram models) followed by `opts.length` generated characters.
pub fn generate(
    model: &CharLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    rng: &mut Rng,
    device: &Device,
) -> Result<Vec<String>> {
    generate_counted(model, kind, opts, rng, device, &|_| {})
}

/// [`generate`], telling `drawn(n)` of every `n` characters more drawn (of
/// `opts.count x opts.length`; from the kernel threads when on the host),
/// for a progress bar of a long run whose texts come at its end.
pub fn generate_counted(
    model: &CharLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    rng: &mut Rng,
    device: &Device,
    drawn: &(dyn Fn(usize) + Sync),
) -> Result<Vec<String>> {
    if opts.count == 0 {
        return Ok(vec![]);
    }
    check_options(model, opts)?;
    if model::device::runs_on_host(device) {
        return generate_host(
            model,
            kind,
            opts,
            rng,
            model::kernel::pool::threads(),
            drawn,
        );
    }
    generate_tensor(model, kind, opts, rng, device, drawn)
}

/// The bounds and values [`generate`] checks before allocating anything.
fn check_options(model: &CharLm, opts: &SampleOptions) -> Result<()> {
    let prime = opts.prime.as_ref().map_or(0, |p| p.len());
    let chars = (opts.count as f64) * (opts.length as f64 + prime as f64 + START_CHARS as f64);
    if chars > MAX_SAMPLE_CHARS as f64 {
        return Err(TrainError::Input(format!(
            "--count {} x (--length {} + the prime's {prime} + {START_CHARS} start characters): {chars:.0} \
             characters held at once, more than the {MAX_SAMPLE_CHARS}; lower --count or \
             --length",
            opts.count, opts.length
        )));
    }
    // each stream's state and logits, besides its text
    let hidden: usize = model.layers.iter().map(|l| l.d_hidden).sum();
    crate::memory::check_fits(
        &format!("sampling {} streams", opts.count),
        opts.count as f64 * (hidden as f64 * 8.0 + 64.0) * 4.0 + chars,
        "lower --count",
    )?;
    opts.truncation.check()?;
    if !(opts.temperature >= 0.0 && opts.temperature.is_finite()) {
        return Err(TrainError::Input(format!(
            "--temperature must be a number >= 0, got {}",
            opts.temperature
        )));
    }
    Ok(())
}

/// A prime as the model reads it.
pub(crate) struct Prime {
    /// Its ids, after spaces up to the model's context (a bigram model
    /// reads two characters: a space before a lone one).
    pub ids: Vec<u8>,
    /// How many of `ids` are those spaces, which no text shows: nobody
    /// typed them.
    pub padding: usize,
}

/// The prime as the model reads it; `None` when there is none.
pub(crate) fn padded_prime(prime: Option<&str>, ctx: usize) -> Result<Option<Prime>> {
    match prime {
        Some(p) if !p.is_empty() => {
            let typed = prime_ids(p)?;
            let padding = ctx.saturating_sub(typed.len());
            let mut ids = vec![0; padding];
            ids.extend(typed);
            Ok(Some(Prime { ids, padding }))
        }
        _ => Ok(None),
    }
}

/// The state of `rows` streams that have all read `start` (at least the
/// model's context long) up to, not including, its last input position:
/// the next step feeds that one. A start of just the context reads nothing.
pub(crate) fn primed_state(
    model: &CharLm,
    kind: TokenizerKind,
    start: &[u8],
    rows: usize,
    device: &Device,
) -> Vec<model::LstmState> {
    let state = model.zero_state(rows, device);
    let warm: Vec<i64> = (context_chars(kind) - 1..start.len() - 1)
        .flat_map(|k| std::iter::repeat_n(input_id(kind, start, k), rows))
        .collect();
    if warm.is_empty() {
        return state;
    }
    model
        .forward_hidden(ids_tensor(warm, device), rows, state, false)
        .1
}

/// A generated history of character ids as text.
pub(crate) fn text_of(ids: Vec<u8>) -> String {
    ids.into_iter()
        .map(|id| id_to_byte(id).expect("char id") as char)
        .collect()
}

/// [`generate`] with tensor operations on `device` (any backend).
fn generate_tensor(
    model: &CharLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    rng: &mut Rng,
    device: &Device,
    drawn: &(dyn Fn(usize) + Sync),
) -> Result<Vec<String>> {
    let s = opts.count;
    let ctx = context_chars(kind);
    // every sequence's history of character ids
    let (mut hist, padding): (Vec<Vec<u8>>, usize) = match padded_prime(opts.prime.as_deref(), ctx)?
    {
        Some(p) => (vec![p.ids; s], p.padding),
        None => {
            let random = |_| (0..ctx).map(|_| random_start(rng)).collect();
            ((0..s).map(random).collect(), 0)
        }
    };
    // a prime is the same for every stream; random starts are only the context: nothing to read
    let mut state = primed_state(model, kind, &hist[0], s, device);
    for _ in 0..opts.length {
        let ids: Vec<i64> = hist
            .iter()
            .map(|h| input_id(kind, h, h.len() - 1))
            .collect();
        let (logits, st) = model.forward(ids_tensor(ids, device), s, state, false);
        state = st;
        let values = model::buffer::values(logits);
        let v = model.output_size();
        for (b, h) in hist.iter_mut().enumerate() {
            h.push(draw(
                &values[b * v..(b + 1) * v],
                opts.temperature,
                &opts.truncation,
                rng,
            ) as u8);
        }
        drawn(s);
    }
    Ok(hist
        .into_iter()
        .map(|h| text_of(h[padding..].to_vec()))
        .collect())
}

/// [`generate`] on the host: the model's weights copied once, then plain
/// loops (no tensor operations), the streams split into `parts` groups run
/// on the kernel threads. Stream `k` draws from its own generator, derived
/// from `rng`, so the texts do not depend on the number of threads.
fn generate_host(
    model: &CharLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    rng: &mut Rng,
    parts: usize,
    drawn: &(dyn Fn(usize) + Sync),
) -> Result<Vec<String>> {
    let lm = model::host::HostLm::new(model);
    let base = rng.next_u64();
    let prime = padded_prime(opts.prime.as_deref(), context_chars(kind))?;
    let parts = model::kernel::split_batch(opts.count, parts);
    let longest = prime.as_ref().map_or(context_chars(kind), |p| p.ids.len()) + opts.length;
    let texts = model::kernel::pool::parallel_map(&parts, |&(lo, n)| {
        let mut texts: Vec<Vec<u8>> = (0..n).map(|_| Vec::with_capacity(longest)).collect();
        let emit = &mut |b: usize, ids: &[u8]| texts[b].extend_from_slice(ids);
        host_streams(&lm, kind, opts, &prime, base, lo..lo + n, emit, drawn);
        texts.into_iter().map(text_of).collect::<Vec<_>>()
    });
    Ok(texts.into_iter().flatten().collect())
}

/// Streams `streams` of [`generate_host`], on this thread; `emit(stream,
/// ids)` receives each stream's start (prime or random start), then every
/// character as it is drawn, `drawn(n)` the count of each step's (one a
/// stream). Only the last characters (the next input) are kept here: a
/// streamed text is not held.
#[allow(clippy::too_many_arguments)]
fn host_streams(
    lm: &model::host::HostLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    prime: &Option<Prime>,
    base: u64,
    streams: std::ops::Range<usize>,
    emit: &mut dyn FnMut(usize, &[u8]),
    drawn: &(dyn Fn(usize) + Sync),
) {
    let ctx = context_chars(kind);
    let n = streams.len();
    let mut rngs: Vec<Rng> = streams.map(|k| Rng::derive(base, k as u64)).collect();
    let mut hist: Vec<Vec<u8>> = match prime {
        Some(p) => vec![p.ids.clone(); n],
        None => rngs
            .iter_mut()
            .map(|r| (0..ctx).map(|_| random_start(r)).collect())
            .collect(),
    };
    let padding = prime.as_ref().map_or(0, |p| p.padding);
    for (b, h) in hist.iter().enumerate() {
        emit(b, &h[padding..]);
    }
    let mut state = lm.zero_state(n);
    let mut logits = Vec::new();
    let mut ids = vec![0usize; n];
    // warm up on the prime: every input position except the last
    for k in ctx - 1..hist[0].len().saturating_sub(1) {
        for (id, h) in ids.iter_mut().zip(&hist) {
            *id = input_id(kind, h, k) as usize;
        }
        lm.step(&ids, &mut state, &mut logits);
    }
    for h in &mut hist {
        h.drain(..h.len() - ctx);
    }
    let v = lm.vocab_out();
    for _ in 0..opts.length {
        for (id, h) in ids.iter_mut().zip(&hist) {
            *id = input_id(kind, h, h.len() - 1) as usize;
        }
        lm.step(&ids, &mut state, &mut logits);
        for (b, h) in hist.iter_mut().enumerate() {
            let c = draw(
                &logits[b * v..(b + 1) * v],
                opts.temperature,
                &opts.truncation,
                &mut rngs[b],
            ) as u8;
            h.push(c);
            h.remove(0);
            emit(b, &[c]);
        }
        drawn(n);
    }
}

/// One text of [`generate`] (its `count` is taken as 1), handed to `emit`
/// piece by piece as it is generated: the same text `generate` gives, but
/// a long sample shows its beginning at once. On devices whose tensors are
/// not in this process, the whole text comes at the end.
pub fn generate_streaming(
    model: &CharLm,
    kind: TokenizerKind,
    opts: &SampleOptions,
    rng: &mut Rng,
    device: &Device,
    emit: &mut dyn FnMut(&str),
) -> Result<()> {
    let opts = SampleOptions {
        count: 1,
        ..opts.clone()
    };
    if !model::device::runs_on_host(device) {
        for text in generate(model, kind, &opts, rng, device)? {
            emit(&text);
        }
        return Ok(());
    }
    // the same checks and the same random draws as `generate` on the host
    check_options(model, &opts)?;
    let lm = model::host::HostLm::new(model);
    let base = rng.next_u64();
    let prime = padded_prime(opts.prime.as_deref(), context_chars(kind))?;
    let mut pending = Vec::with_capacity(STREAM_CHUNK);
    let chunks = &mut |_, ids: &[u8]| {
        pending.extend_from_slice(ids);
        if pending.len() >= STREAM_CHUNK {
            emit(&text_of(std::mem::take(&mut pending)));
        }
    };
    host_streams(&lm, kind, &opts, &prime, base, 0..1, chunks, &|_| {});
    if !pending.is_empty() {
        emit(&text_of(pending));
    }
    Ok(())
}

/// Characters [`generate_streaming`] hands over at a time.
const STREAM_CHUNK: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_gives_the_same_text_as_the_batch() {
        let device = Device::flex();
        for kind in [TokenizerKind::Char, TokenizerKind::Bigram] {
            let m = small_model(kind, &device);
            for prime in [None, Some("the cat".to_string())] {
                let opts = SampleOptions {
                    length: 300,
                    temperature: 1.0,
                    prime,
                    count: 1,
                    truncation: Truncation::default(),
                };
                let batch = generate(&m, kind, &opts, &mut Rng::new(9), &device).unwrap();
                let mut streamed = String::new();
                let mut pieces = 0;
                generate_streaming(&m, kind, &opts, &mut Rng::new(9), &device, &mut |t| {
                    streamed.push_str(t);
                    pieces += 1;
                })
                .unwrap();
                assert_eq!(streamed, batch[0]);
                assert!(pieces > 3, "{pieces} pieces: not streamed");
            }
        }
    }

    /// A prime shorter than a bigram model's context is read after a
    /// space, which no text shows: sampled (on the host and with tensor
    /// operations) or searched, a text starts with the prime as typed.
    #[test]
    fn a_short_prime_is_shown_as_typed() {
        let device = Device::flex();
        let kind = TokenizerKind::Bigram;
        let m = small_model(kind, &device);
        let opts = SampleOptions {
            length: 20,
            temperature: 1.0,
            prime: Some("a".into()),
            count: 2,
            truncation: Truncation::default(),
        };
        let host = generate(&m, kind, &opts, &mut Rng::new(4), &device).unwrap();
        let tensor = generate_tensor(&m, kind, &opts, &mut Rng::new(4), &device, &|_| {}).unwrap();
        let searched = crate::beam::most_likely(&m, kind, Some("a"), (20, 2), &device, &mut |_| {})
            .unwrap()
            .text;
        for text in host.iter().chain(&tensor).chain([&searched]) {
            assert!(text.starts_with('a') && text.len() == 21, "{text:?}");
        }
        // no prime: the search starts after unshown spaces
        let searched = crate::beam::most_likely(&m, kind, None, (20, 2), &device, &mut |_| {});
        assert_eq!(searched.unwrap().text.len(), 20);
    }

    #[test]
    fn top_k_of_one_is_greedy_and_top_p_keeps_the_smallest_set_with_the_mass() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.15f32.ln(), 0.05f32.ln()];
        let mut rng = Rng::new(3);
        let one = Truncation {
            top_k: Some(1),
            top_p: None,
        };
        for _ in 0..50 {
            assert_eq!(draw(&logits, 1.0, &one, &mut rng), 0);
        }
        let count = |t: Truncation, rng: &mut Rng| {
            let mut c = [0usize; 4];
            for _ in 0..4000 {
                c[draw(&logits, 1.0, &t, rng)] += 1;
            }
            c
        };
        // 0.5 + 0.3 reaches 0.8: the first two only
        let c = count(
            Truncation {
                top_k: None,
                top_p: Some(0.8),
            },
            &mut rng,
        );
        assert!(c[0] > 0 && c[1] > 0 && c[2] == 0 && c[3] == 0, "{c:?}");
        assert!((2300..2700).contains(&c[0]), "renormalised 5/8: {c:?}");
        // a little more needs the third
        let c = count(
            Truncation {
                top_k: None,
                top_p: Some(0.81),
            },
            &mut rng,
        );
        assert!(c[2] > 0 && c[3] == 0, "{c:?}");
        // top-k 2 and top-p 1: the two most likely
        let c = count(
            Truncation {
                top_k: Some(2),
                top_p: Some(1.0),
            },
            &mut rng,
        );
        assert!(c[2] == 0 && c[3] == 0, "{c:?}");
        assert!(
            Truncation {
                top_k: Some(0),
                top_p: None
            }
            .check()
            .is_err()
        );
        assert!(
            Truncation {
                top_k: None,
                top_p: Some(0.0)
            }
            .check()
            .is_err()
        );
    }

    #[test]
    fn draw_respects_temperature_zero_and_weights() {
        let mut rng = Rng::new(0);
        assert_eq!(
            draw(&[0.1, 3.0, -1.0], 0.0, &Truncation::default(), &mut rng),
            1
        );
        for tiny in [1e-39, 1e-45, 1e-320] {
            assert_eq!(
                draw(&[0.1, 3.0, -1.0], tiny, &Truncation::default(), &mut rng),
                1,
                "{tiny}"
            );
        }
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[draw(
                &[0.0, (2.0f32).ln(), f32::NEG_INFINITY],
                1.0,
                &Truncation::default(),
                &mut rng,
            )] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((1800..2200).contains(&counts[1]), "{counts:?}");
    }

    fn small_model(kind: TokenizerKind, device: &Device) -> CharLm {
        let vocab = if kind == TokenizerKind::Bigram {
            729
        } else {
            27
        };
        model::CharLmConfig::new(vocab, 27)
            .with_input(model::InputKind::Embedding)
            .with_n_layers(2)
            .with_d_hidden(16)
            .with_d_embedding(8)
            .init(3, device)
    }

    /// Greedy generation (temperature 0, a prime, so no randomness at all)
    /// gives the same text on the host path as with tensor operations, and
    /// both tell of every character drawn (`count x length`), a step at a time.
    #[test]
    fn host_and_tensor_generation_agree_greedily() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let device = Device::flex();
        for kind in [TokenizerKind::Char, TokenizerKind::Bigram] {
            let m = small_model(kind, &device);
            let opts = SampleOptions {
                length: 40,
                temperature: 0.0,
                prime: Some("the cat".into()),
                count: 3,
                truncation: Truncation::default(),
            };
            let (chars, calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let drawn = |n: usize| {
                chars.fetch_add(n, Ordering::Relaxed);
                calls.fetch_add(1, Ordering::Relaxed);
            };
            let a = generate_tensor(&m, kind, &opts, &mut Rng::new(1), &device, &drawn).unwrap();
            assert_eq!(
                (
                    chars.swap(0, Ordering::Relaxed),
                    calls.swap(0, Ordering::Relaxed)
                ),
                (120, 40)
            );
            // two parts (of 2 and 1 streams): each tells of its own
            let b = generate_host(&m, kind, &opts, &mut Rng::new(1), 2, &drawn).unwrap();
            assert_eq!((chars.into_inner(), calls.into_inner()), (120, 80));
            assert_eq!(a, b, "{kind:?}");
            assert!(a.iter().all(|t| t.starts_with("the cat") && t.len() == 47));
        }
    }

    /// Random samples do not depend on how the streams are split over threads,
    /// and differ between streams.
    #[test]
    fn host_generation_is_independent_of_the_thread_split() {
        let device = Device::flex();
        let m = small_model(TokenizerKind::Char, &device);
        let opts = SampleOptions {
            length: 30,
            temperature: 1.0,
            prime: None,
            count: 7,
            truncation: Truncation::default(),
        };
        let one =
            generate_host(&m, TokenizerKind::Char, &opts, &mut Rng::new(5), 1, &|_| {}).unwrap();
        let three =
            generate_host(&m, TokenizerKind::Char, &opts, &mut Rng::new(5), 3, &|_| {}).unwrap();
        assert_eq!(one, three);
        assert_eq!(one.len(), 7);
        assert!(one.iter().all(|t| t.len() == 31));
        let distinct: std::collections::BTreeSet<_> = one.iter().collect();
        assert!(distinct.len() > 1, "{one:?}");
        let other =
            generate_host(&m, TokenizerKind::Char, &opts, &mut Rng::new(6), 1, &|_| {}).unwrap();
        assert_ne!(one, other);
    }

    #[test]
    fn prime_is_lowered_or_rejected_with_position() {
        assert_eq!(prime_ids("The ").unwrap(), vec![20, 8, 5, 0]);
        let e = prime_ids("ab1").unwrap_err().to_string();
        assert!(e.contains("'1' at position 2"), "{e}");
    }
}
