//! Line plots of metrics against steps, drawn with `plotters`: PNG for the
//! run directory (encoded with the `png` crate, written atomically) and SVG
//! for documents. The text uses an embedded ASCII subset of DejaVu Sans
//! (`assets/`, 20 KB, Bitstream Vera licence), so plots look the same on
//! every machine, with or without system fonts.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

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

    fn finite(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    }
}

/// A chart of one or more series against a common x axis.
#[derive(Debug, Clone)]
pub struct Plot {
    title: String,
    x_label: String,
    y_label: String,
    series: Vec<Series>,
    width: u32,
    height: u32,
}

/// The series colours (matplotlib's first five).
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-ascii.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES)
            .unwrap_or_else(|_| panic!("the embedded font is a valid TrueType file"));
    });
}

/// `[lo, hi]` covering `values`, padded by 5% (a span around a lone value).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

/// A tick value as written on an axis: whole numbers without decimals
/// (`2000`, not `2000.0`), others with at most four significant decimals.
fn tick_label(v: &f64) -> String {
    if (v - v.round()).abs() <= 1e-9 * v.abs().max(1.0) {
        return format!("{:.0}", v.round());
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
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

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        register_font();
        root.fill(&WHITE)?;
        let (x0, x1) = span(self.series.iter().flat_map(|s| s.finite().map(|p| p.0)));
        let (x0, x1) = (x0.max(0.0).min(x1 - 1.0), x1);
        let (y0, y1) = span(self.series.iter().flat_map(|s| s.finite().map(|p| p.1)));
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FONT, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick_label)
            .y_label_formatter(&tick_label)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .light_line_style(RGBColor(238, 238, 238))
            .bold_line_style(RGBColor(215, 215, 215))
            .draw()?;
        for (k, s) in self.series.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            chart
                .draw_series(LineSeries::new(s.finite(), color.stroke_width(2)))?
                .label(&s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 15))
            .draw()?;
        root.present()
    }

    /// The plot as RGB pixels, `width x height x 3`.
    fn render_rgb(&self, path: &Path) -> Result<Vec<u8>> {
        let mut px = vec![0u8; self.width as usize * self.height as usize * 3];
        {
            let root =
                BitMapBackend::with_buffer(&mut px, (self.width, self.height)).into_drawing_area();
            self.draw(&root).map_err(|e| {
                TrainError::Run(format!("{}: drawing the plot: {e}", path.display()))
            })?;
        }
        Ok(px)
    }

    /// Writes the plot as a PNG file (atomically).
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let px = self.render_rgb(path)?;
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let bad = |e: png::EncodingError| TrainError::Run(format!("{}: {e}", path.display()));
            let mut w = enc.write_header().map_err(bad)?;
            w.write_image_data(&px).map_err(bad)?;
        }
        crate::fsutil::atomic_write(path, &bytes)
    }

    /// Whether `path` names a file [`Plot::write`] writes as what it says:
    /// `.png` or `.svg` (any case).
    pub fn is_plot_path(path: &Path) -> bool {
        let ext = path.extension().and_then(|e| e.to_str());
        ext.is_some_and(|e| e.eq_ignore_ascii_case("png") || e.eq_ignore_ascii_case("svg"))
    }

    /// Writes the plot as SVG when `path` ends in `.svg`, else as PNG.
    pub fn write(&self, path: &Path) -> Result<()> {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("svg") => self.write_svg(path),
            _ => self.write_png(path),
        }
    }

    /// Writes the plot as an SVG file (atomically).
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        let mut svg = String::new();
        {
            let root =
                SVGBackend::with_string(&mut svg, (self.width, self.height)).into_drawing_area();
            self.draw(&root).map_err(|e| {
                TrainError::Run(format!("{}: drawing the plot: {e}", path.display()))
            })?;
        }
        crate::fsutil::atomic_write_str(path, &svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Plot {
        let xs: Vec<f64> = (0..71).map(|i| (i * 100) as f64).collect();
        let mut plot = Plot::new("Demo: perplexity", "step", "perplexity");
        plot.add(Series::new(
            "validation",
            &xs,
            xs.iter()
                .map(|x| 27.0 * (-x / 2000.0).exp() + 4.0)
                .collect(),
        ));
        let mut minibatch: Vec<f64> = xs
            .iter()
            .map(|x| 26.0 * (-x / 1500.0).exp() + 4.5)
            .collect();
        minibatch[5] = f64::NAN; // skipped, not drawn to the origin
        plot.add(Series::new("minibatch", &xs, minibatch));
        plot
    }

    #[test]
    fn writes_a_png_with_both_lines_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let plot = demo();
        plot.write_png(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let px = plot.render_rgb(&p).unwrap();
        let count = |c: RGBColor| px.chunks(3).filter(|q| *q == [c.0, c.1, c.2]).count();
        let (blue, orange) = (count(COLORS[0]), count(COLORS[1]));
        assert!(blue > 1000 && orange > 1000, "{blue} {orange}");
        // the title, tick values and legend are drawn: many dark pixels
        let dark = px.chunks(3).filter(|q| q.iter().all(|&v| v < 90)).count();
        assert!(dark > 2000, "{dark} dark pixels: no text?");
    }

    #[test]
    fn writes_an_svg_with_the_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.svg");
        demo().write_svg(&p).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        for text in ["Demo: perplexity", "validation", "minibatch", "step"] {
            assert!(svg.contains(text), "{text}");
        }
    }

    #[test]
    fn ticks_read_as_numbers() {
        assert_eq!(tick_label(&2000.0), "2000");
        assert_eq!(tick_label(&-5.0), "-5");
        assert_eq!(tick_label(&0.25), "0.25");
        assert_eq!(tick_label(&4.5), "4.5");
        assert_eq!(tick_label(&1.0e-5), "0");
    }

    #[test]
    fn empty_and_flat_plots_still_draw() {
        let dir = tempfile::tempdir().unwrap();
        let mut plot = Plot::new("flat", "step", "loss");
        plot.add(Series::new("one", &[3.0], vec![2.0]));
        plot.write_png(&dir.path().join("a.png")).unwrap();
        Plot::new("empty", "step", "loss")
            .write_png(&dir.path().join("b.png"))
            .unwrap();
    }
}
