//! Grouped bar charts as PNG, for the benchmark reports: drawn by plotters into a pixel buffer
//! and encoded by `image`, the text set in the DejaVu Sans subset under assets/, so a chart
//! needs no system font or library and draws the same on every machine.

use std::sync::Once;

use anyhow::{anyhow, ensure, Result};
use image::{ImageFormat, RgbImage};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// assets/README.md says where it comes from and its license.
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-Latin1.ttf");
/// plotters looks fonts up by family name; its own default labels ask for this one.
const FAMILY: &str = "sans-serif";

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let registered = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
        assert!(registered, "assets/DejaVuSans-Latin1.ttf is not a font");
    });
}

/// Bars side by side within each group, one per series, the series told apart by colour and
/// named in a legend under the chart.
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    /// The categories along the x axis.
    pub groups: Vec<String>,
    /// Each series' name and its value in every group.
    pub series: Vec<(String, Vec<f64>)>,
    /// The top of the y axis; `None`: a little above the highest bar.
    pub y_max: Option<f64>,
    /// Write each bar's value above it (for charts with few bars).
    pub values: bool,
}

const HEIGHT: u32 = 440;
const BAR: u32 = 16;
const LEGEND_ENTRY: (u32, u32) = (240, 20);

impl BarChart {
    pub fn png(&self) -> Result<Vec<u8>> {
        ensure!(
            !self.groups.is_empty() && !self.series.is_empty(),
            "a bar chart needs at least one group and one series"
        );
        for (name, values) in &self.series {
            ensure!(
                values.len() == self.groups.len(),
                "series {name} has {} values for {} groups",
                values.len(),
                self.groups.len()
            );
        }
        register_font();
        let n = self.series.len() as u32;
        let group_width = (n * BAR + 2 * BAR).max(100);
        let width = (self.groups.len() as u32 * group_width + 100).max(640);
        let per_row = (width / LEGEND_ENTRY.0).max(1);
        let legend_height = n.div_ceil(per_row) * LEGEND_ENTRY.1 + 10;
        let height = HEIGHT + legend_height;
        let mut pixels = vec![0u8; (width * height * 3) as usize];
        self.draw(&mut pixels, (width, height), per_row)
            .map_err(|e| anyhow!("drawing the chart: {e}"))?;
        let image = RgbImage::from_raw(width, height, pixels).expect("sized for the image");
        let mut png = std::io::Cursor::new(Vec::new());
        image.write_to(&mut png, ImageFormat::Png)?;
        Ok(png.into_inner())
    }

    fn draw(&self, pixels: &mut [u8], size: (u32, u32), per_row: u32) -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_vertically(HEIGHT);
        let highest = self.series.iter().flat_map(|(_, v)| v).copied().fold(0.0, f64::max);
        let top = self.y_max.unwrap_or(highest * 1.15).max(f64::MIN_POSITIVE);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&self.title, (FAMILY, 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..self.groups.len() as f64, 0.0..top)?;
        let y_label = |y: &f64| {
            if top >= 10.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(11)
            .y_max_light_lines(1)
            .y_label_formatter(&y_label)
            .y_desc(self.y_label.as_str())
            .label_style((FAMILY, 13))
            .axis_desc_style((FAMILY, 14))
            .draw()?;
        // The bars take 80% of a group's width, split evenly between the series.
        let bar = 0.8 / self.series.len() as f64;
        let label = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (s, (_, values)) in self.series.iter().enumerate() {
            let colour = Palette99::pick(s).mix(0.9);
            let left = |g: usize| g as f64 + 0.1 + s as f64 * bar;
            chart.draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(g, &v)| Rectangle::new([(left(g), 0.0), (left(g) + bar, v)], colour.filled())),
            )?;
            if self.values {
                chart.draw_series(
                    values
                        .iter()
                        .enumerate()
                        .map(|(g, &v)| Text::new(format_value(v), (left(g) + bar / 2.0, v), label.clone())),
                )?;
            }
        }
        // Group names under their groups, placed by hand: the axis's own labels go at round
        // numbers, not at the groups' centres.
        let name = TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (g, group) in self.groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(group.as_str(), (x, y + 8), name.clone()))?;
        }
        let entry = TextStyle::from((FAMILY, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (s, (series, _)) in self.series.iter().enumerate() {
            let (row, column) = (s as u32 / per_row, s as u32 % per_row);
            let (x, y) = (
                (16 + column * LEGEND_ENTRY.0) as i32,
                (5 + row * LEGEND_ENTRY.1 + LEGEND_ENTRY.1 / 2) as i32,
            );
            legend.draw(&Rectangle::new(
                [(x, y - 6), (x + 12, y + 6)],
                Palette99::pick(s).filled(),
            ))?;
            legend.draw(&Text::new(series.as_str(), (x + 18, y), entry.clone()))?;
        }
        root.present()?;
        Ok(())
    }
}

/// A bar's value, to three significant digits or as a whole number.
fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_pngs_sized_by_their_bars() {
        let chart = |groups: usize, series: usize| BarChart {
            title: "scores".into(),
            y_label: "%".into(),
            groups: (0..groups).map(|g| format!("type {g}")).collect(),
            series: (0..series)
                .map(|s| (format!("system {s}"), (0..groups).map(|g| (g * s) as f64).collect()))
                .collect(),
            y_max: Some(100.0),
            values: true,
        };
        let small = image::load_from_memory(&chart(2, 2).png().unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (640, HEIGHT + 30));
        let large = image::load_from_memory(&chart(9, 12).png().unwrap()).unwrap();
        assert!(large.width() > small.width() && large.height() > small.height());
        let mut bad = chart(2, 2);
        bad.series[1].1.pop();
        assert!(bad.png().unwrap_err().to_string().contains("system 1 has 1 values"));
    }
}
