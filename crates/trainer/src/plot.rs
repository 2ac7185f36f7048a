//! Line plots written as PNG, with a built-in bitmap font: no plotting
//! library, no system fonts. Enough for "metric against step" charts with a
//! title, labelled axes, tick values, a grid and a legend.

use std::path::Path;

use crate::error::{Result, TrainError};

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Points `(x, y)`; non-finite values are skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from parallel x and y values.
    pub fn new(label: &str, xs: &[f64], ys: Vec<f64>) -> Self {
        Series {
            label: label.to_string(),
            points: xs.iter().copied().zip(ys).collect(),
        }
    }
}

/// A chart of one or more series against a common x axis.
#[derive(Debug, Clone)]
pub struct Plot {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    width: usize,
    height: usize,
}

const COLORS: [[u8; 3]; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];
const BG: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];
const SCALE: usize = 2;
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 9;
const ADVANCE: usize = (GLYPH_W + 1) * SCALE;

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        let mut px = Vec::with_capacity(w * h * 3);
        for _ in 0..w * h {
            px.extend_from_slice(&BG);
        }
        Canvas { w, h, px }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        for y in y0..=y1 {
            for x in x0..=x1 {
                self.set(x, y, c);
            }
        }
    }

    /// A line of the given thickness (Bresenham, square pen).
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(
                x - thick / 2,
                y - thick / 2,
                x + (thick - 1) / 2,
                y + (thick - 1) / 2,
                c,
            );
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, row) in rows.iter().enumerate() {
                for col in 0..GLYPH_W {
                    if row & (1 << (GLYPH_W - 1 - col)) != 0 {
                        let px = x + (k * ADVANCE + col * SCALE) as i64;
                        let py = y + (r * SCALE) as i64;
                        self.rect(px, py, px + SCALE as i64 - 1, py + SCALE as i64 - 1, c);
                    }
                }
            }
        }
    }

    fn write_png(&self, path: &Path) -> Result<()> {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.w as u32, self.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc
                .write_header()
                .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?;
            w.write_image_data(&self.px)
                .map_err(|e| TrainError::Run(format!("{}: {e}", path.display())))?;
        }
        crate::fsutil::atomic_write(path, &bytes)
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() * ADVANCE) as i64
}

/// "Nice" tick values covering `[lo, hi]`: steps of 1, 2 or 5 times a power of ten.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    // the 1-2-5 step whose tick count is closest to the target
    let count = |step: f64| ((hi / step).floor() - (lo / step).ceil() + 1.0).max(0.0);
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .min_by(|a, b| {
            (count(*a) - target as f64)
                .abs()
                .total_cmp(&(count(*b) - target as f64).abs())
        })
        .expect("candidates");
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    // integer multiples of the step, so values do not drift (2.4, not 2.4000000000000004)
    (first..=last).map(|k| k as f64 * step).collect()
}

/// A compact label for a tick value.
pub fn tick_label(v: f64, step: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-3) {
        return format!("{v:.1e}");
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

impl Plot {
    /// An empty plot.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Plot {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            series: vec![],
            width: 900,
            height: 540,
        }
    }

    /// Adds a line.
    pub fn add(&mut self, s: Series) {
        self.series.push(s);
    }

    /// Renders the RGB pixels (`width * height * 3`).
    fn render(&self) -> Canvas {
        let mut cv = Canvas::new(self.width, self.height);
        let (left, right, top, bottom) = (100i64, 24i64, 64i64, 70i64);
        let (x0, x1) = (left, self.width as i64 - right);
        let (y0, y1) = (top, self.height as i64 - bottom);
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (mut xmin, mut xmax) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in pts() {
            xmin = xmin.min(x);
            xmax = xmax.max(x);
            ymin = ymin.min(y);
            ymax = ymax.max(y);
        }
        if !xmin.is_finite() {
            (xmin, xmax, ymin, ymax) = (0.0, 1.0, 0.0, 1.0);
        }
        if xmax <= xmin {
            xmax = xmin + 1.0;
        }
        let pad = ((ymax - ymin) * 0.05).max(ymax.abs() * 1e-3).max(1e-9);
        ymin -= pad;
        ymax += pad;
        let sx = |x: f64| x0 + ((x - xmin) / (xmax - xmin) * (x1 - x0) as f64).round() as i64;
        let sy = |y: f64| y1 - ((y - ymin) / (ymax - ymin) * (y1 - y0) as f64).round() as i64;

        // grid and ticks
        let xt = nice_ticks(xmin, xmax, 8);
        let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
        for &t in &xt {
            let x = sx(t);
            cv.line((x, y0), (x, y1), GRID, 1);
            let label = tick_label(t, xstep);
            cv.text(x - text_width(&label) / 2, y1 + 10, &label, INK);
        }
        let yt = nice_ticks(ymin, ymax, 6);
        let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
        for &t in &yt {
            let y = sy(t);
            cv.line((x0, y), (x1, y), GRID, 1);
            let label = tick_label(t, ystep);
            cv.text(
                x0 - 10 - text_width(&label),
                y - (GLYPH_H * SCALE / 2) as i64 + 3,
                &label,
                INK,
            );
        }
        // axes
        cv.line((x0, y0), (x0, y1), INK, 2);
        cv.line((x0, y1), (x1, y1), INK, 2);
        // labels
        cv.text(
            (self.width as i64 - text_width(&self.title)) / 2,
            14,
            &self.title,
            INK,
        );
        cv.text(
            x0 + (x1 - x0 - text_width(&self.x_label)) / 2,
            y1 + 40,
            &self.x_label,
            INK,
        );
        cv.text(x0 - 60, y0 - 26, &self.y_label, INK);
        // series
        for (k, s) in self.series.iter().enumerate() {
            let c = COLORS[k % COLORS.len()];
            let p: Vec<(i64, i64)> = s
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (sx(x), sy(y)))
                .collect();
            for w in p.windows(2) {
                cv.line(w[0], w[1], c, 2);
            }
            if p.len() == 1 {
                cv.rect(p[0].0 - 2, p[0].1 - 2, p[0].0 + 2, p[0].1 + 2, c);
            }
        }
        // legend, top right inside the plot area
        let lw = self
            .series
            .iter()
            .map(|s| text_width(&s.label))
            .max()
            .unwrap_or(0)
            + 44;
        let lh = (self.series.len() as i64) * 22 + 8;
        let (lx, ly) = (x1 - lw - 10, y0 + 10);
        cv.rect(lx, ly, lx + lw, ly + lh, BG);
        cv.line((lx, ly), (lx + lw, ly), GRID, 1);
        cv.line((lx, ly + lh), (lx + lw, ly + lh), GRID, 1);
        cv.line((lx, ly), (lx, ly + lh), GRID, 1);
        cv.line((lx + lw, ly), (lx + lw, ly + lh), GRID, 1);
        for (k, s) in self.series.iter().enumerate() {
            let y = ly + 8 + k as i64 * 22;
            let c = COLORS[k % COLORS.len()];
            cv.line((lx + 8, y + 7), (lx + 30, y + 7), c, 3);
            cv.text(lx + 36, y, &s.label, INK);
        }
        cv
    }

    /// Writes the plot as a PNG file (atomically).
    pub fn write_png(&self, path: &Path) -> Result<()> {
        self.render().write_png(path)
    }
}

/// Rows of a glyph, 5 bits each (bit 4 leftmost), 9 rows (7 above the baseline, 2 descender).
fn glyph(c: char) -> [u8; GLYPH_H] {
    let rows: [&str; GLYPH_H] = match c.to_ascii_lowercase() {
        '0' => [
            ".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###.", ".....", ".....",
        ],
        '1' => [
            "..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###.", ".....", ".....",
        ],
        '2' => [
            ".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####", ".....", ".....",
        ],
        '3' => [
            "#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###.", ".....", ".....",
        ],
        '4' => [
            "...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#.", ".....", ".....",
        ],
        '5' => [
            "#####", "#....", "####.", "....#", "....#", "#...#", ".###.", ".....", ".....",
        ],
        '6' => [
            "..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###.", ".....", ".....",
        ],
        '7' => [
            "#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#...", ".....", ".....",
        ],
        '8' => [
            ".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###.", ".....", ".....",
        ],
        '9' => [
            ".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##..", ".....", ".....",
        ],
        'a' => [
            ".....", ".....", ".###.", "....#", ".####", "#...#", ".####", ".....", ".....",
        ],
        'b' => [
            "#....", "#....", "####.", "#...#", "#...#", "#...#", "####.", ".....", ".....",
        ],
        'c' => [
            ".....", ".....", ".###.", "#....", "#....", "#...#", ".###.", ".....", ".....",
        ],
        'd' => [
            "....#", "....#", ".####", "#...#", "#...#", "#...#", ".####", ".....", ".....",
        ],
        'e' => [
            ".....", ".....", ".###.", "#...#", "#####", "#....", ".###.", ".....", ".....",
        ],
        'f' => [
            "..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#...", ".....", ".....",
        ],
        'g' => [
            ".....", ".....", ".####", "#...#", "#...#", ".####", "....#", "#...#", ".###.",
        ],
        'h' => [
            "#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#", ".....", ".....",
        ],
        'i' => [
            "..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###.", ".....", ".....",
        ],
        'j' => [
            "...#.", ".....", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##..",
        ],
        'k' => [
            "#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#.", ".....", ".....",
        ],
        'l' => [
            ".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###.", ".....", ".....",
        ],
        'm' => [
            ".....", ".....", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#", ".....", ".....",
        ],
        'n' => [
            ".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#", ".....", ".....",
        ],
        'o' => [
            ".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###.", ".....", ".....",
        ],
        'p' => [
            ".....", ".....", "####.", "#...#", "#...#", "####.", "#....", "#....", "#....",
        ],
        'q' => [
            ".....", ".....", ".####", "#...#", "#...#", ".####", "....#", "....#", "....#",
        ],
        'r' => [
            ".....", ".....", "#.##.", "##..#", "#....", "#....", "#....", ".....", ".....",
        ],
        's' => [
            ".....", ".....", ".####", "#....", ".###.", "....#", "####.", ".....", ".....",
        ],
        't' => [
            ".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##.", ".....", ".....",
        ],
        'u' => [
            ".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#", ".....", ".....",
        ],
        'v' => [
            ".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#..", ".....", ".....",
        ],
        'w' => [
            ".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#.", ".....", ".....",
        ],
        'x' => [
            ".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", ".....", ".....",
        ],
        'y' => [
            ".....", ".....", "#...#", "#...#", "#...#", ".####", "....#", "#...#", ".###.",
        ],
        'z' => [
            ".....", ".....", "#####", "...#.", "..#..", ".#...", "#####", ".....", ".....",
        ],
        '.' => [
            ".....", ".....", ".....", ".....", ".....", ".##..", ".##..", ".....", ".....",
        ],
        ',' => [
            ".....", ".....", ".....", ".....", ".##..", "..#..", ".#...", ".....", ".....",
        ],
        ':' => [
            ".....", ".##..", ".##..", ".....", ".##..", ".##..", ".....", ".....", ".....",
        ],
        '-' => [
            ".....", ".....", ".....", "#####", ".....", ".....", ".....", ".....", ".....",
        ],
        '+' => [
            ".....", "..#..", "..#..", "#####", "..#..", "..#..", ".....", ".....", ".....",
        ],
        '(' => [
            "...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#.", ".....", ".....",
        ],
        ')' => [
            ".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#...", ".....", ".....",
        ],
        '/' => [
            ".....", "....#", "...#.", "..#..", ".#...", "#....", ".....", ".....", ".....",
        ],
        '%' => [
            "##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##", ".....", ".....",
        ],
        '=' => [
            ".....", ".....", "#####", ".....", "#####", ".....", ".....", ".....", ".....",
        ],
        '_' => [
            ".....", ".....", ".....", ".....", ".....", ".....", "#####", ".....", ".....",
        ],
        '\'' => [
            "..#..", "..#..", ".....", ".....", ".....", ".....", ".....", ".....", ".....",
        ],
        ' ' => [
            ".....", ".....", ".....", ".....", ".....", ".....", ".....", ".....", ".....",
        ],
        _ => [
            "#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####", ".....", ".....",
        ],
    };
    let mut out = [0u8; GLYPH_H];
    for (r, row) in rows.iter().enumerate() {
        out[r] = row
            .bytes()
            .fold(0, |acc, b| (acc << 1) | u8::from(b == b'#'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(
            nice_ticks(0.0, 7000.0, 8),
            vec![0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0]
        );
        let t = nice_ticks(1.9, 3.3, 6);
        let want = [2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2];
        assert_eq!(t.len(), want.len(), "{t:?}");
        assert!(
            t.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9),
            "{t:?}"
        );
        assert_eq!(
            nice_ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(tick_label(2.4000000001, 0.2), "2.4");
        assert_eq!(tick_label(7000.0, 1000.0), "7000");
    }

    #[test]
    fn writes_a_png_with_drawn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let xs: Vec<f64> = (0..71).map(|i| (i * 100) as f64).collect();
        let mut plot = Plot::new("Demo: perplexity", "step", "perplexity");
        plot.add(Series::new(
            "validation",
            &xs,
            xs.iter()
                .map(|x| 27.0 * (-x / 2000.0).exp() + 4.0)
                .collect(),
        ));
        plot.add(Series::new(
            "minibatch",
            &xs,
            xs.iter()
                .map(|x| 26.0 * (-x / 1500.0).exp() + 4.5)
                .collect(),
        ));
        plot.write_png(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let canvas = plot.render();
        let blue = canvas.px.chunks(3).filter(|c| *c == COLORS[0]).count();
        let orange = canvas.px.chunks(3).filter(|c| *c == COLORS[1]).count();
        assert!(blue > 1000 && orange > 1000, "{blue} {orange}");
    }
}
