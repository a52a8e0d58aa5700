//! A standalone SVG timeline of a simulated run: panels stacked vertically over a shared time axis,
//! with dashed markers for events such as faults.
//!
//! Depends on std only and is deterministic: identical input gives byte-identical output, since
//! every coordinate is printed with fixed precision and nothing depends on a clock or a hash map.
//! The SVG has no scripts and no external resources.

use std::fmt::Write;

/// One stacked chart: a title, the unit of its y axis, and the series drawn in it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Panel {
    /// Shown above the panel.
    pub title: String,
    /// Unit of the y axis, shown after the title in parentheses (may be empty).
    pub unit: String,
    /// The lines drawn, each in its own color from a fixed palette, in this order.
    pub series: Vec<Series>,
}

/// One line of a panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Shown in the panel's legend.
    pub name: String,
    /// `(t_s, value)` in simulated seconds; points with a NaN or infinite part are skipped.
    pub points: Vec<(f64, f64)>,
    /// Draw as steps (each value holds until the next point, the last until the end), for counts.
    pub step: bool,
}

/// An instant to point out across all panels, drawn as a dashed vertical line with its label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Marker {
    /// When, in simulated seconds; markers outside [0, duration] or not finite are not drawn.
    pub at_s: f64,
    /// What happened, e.g. "crash-node 2".
    pub label: String,
}

/// The most points drawn per series; longer series keep the min and max of each pixel column.
pub const MAX_POINTS_PER_SERIES: usize = 2000;

const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];
const WIDTH: f64 = 1000.0;
const PLOT_LEFT: f64 = 70.0;
const PLOT_RIGHT: f64 = 800.0;
const LEGEND_X: f64 = 815.0;
const HEADER: f64 = 40.0;
const MARKER_BAND: f64 = 90.0;
const PANEL_TITLE: f64 = 22.0;
const PANEL_HEIGHT: f64 = 150.0;
const PANEL_GAP: f64 = 18.0;
const FOOTER: f64 = 44.0;

/// Renders `panels` over a time axis from 0 to `duration_s` (taken from the data when not positive
/// and finite) as a standalone SVG document. The y axis of each panel runs from 0 to a round number
/// at or above its largest value; negative values fall below the frame and are clipped, as are
/// points outside the time range. Legends list every series, so more than about nine per panel
/// overflow into the next one.
pub fn timeline_svg(title: &str, panels: &[Panel], markers: &[Marker], duration_s: f64) -> String {
    let duration_s = if duration_s > 0.0 && duration_s.is_finite() { duration_s } else { data_end_s(panels) };
    let x_of = |t_s: f64| PLOT_LEFT + t_s / duration_s * (PLOT_RIGHT - PLOT_LEFT);
    let markers: Vec<&Marker> =
        markers.iter().filter(|m| m.at_s.is_finite() && (0.0..=duration_s).contains(&m.at_s)).collect();
    let band = if markers.is_empty() { 0.0 } else { MARKER_BAND };
    let block = PANEL_TITLE + PANEL_HEIGHT + PANEL_GAP;
    let plot_top = |i: usize| HEADER + band + i as f64 * block + PANEL_TITLE;
    let height = HEADER + band + panels.len() as f64 * block + FOOTER;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0}" height="{height:.0}" viewBox="0 0 {WIDTH:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    out.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="26.0" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    out.push_str("<defs>\n");
    for i in 0..panels.len() {
        let _ = writeln!(
            out,
            r#"<clipPath id="plot-clip-{i}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
            PLOT_LEFT - 2.0,
            plot_top(i) - 2.0,
            PLOT_RIGHT - PLOT_LEFT + 4.0,
            PANEL_HEIGHT + 4.0
        );
    }
    out.push_str("</defs>\n");

    let x_step = nice_step(duration_s / 8.0);
    let x_ticks: Vec<f64> = (0..).map(|k| k as f64 * x_step).take_while(|&t| t <= duration_s * (1.0 + 1e-9)).collect();
    for (i, panel) in panels.iter().enumerate() {
        let top = plot_top(i);
        let bottom = top + PANEL_HEIGHT;
        let y_max = panel_max(panel);
        let y_step = nice_step(y_max / 5.0);
        let y_top = ((y_max / y_step) - 1e-9).ceil().max(1.0) * y_step;
        let y_of = |v: f64| bottom - v / y_top * PANEL_HEIGHT;
        out.push_str("<g class=\"panel\">\n");
        let heading = if panel.unit.is_empty() {
            escape(&panel.title)
        } else {
            escape(&format!("{} ({})", panel.title, panel.unit))
        };
        let _ = writeln!(
            out,
            r#"<text x="{PLOT_LEFT:.1}" y="{:.1}" font-size="13" font-weight="bold">{heading}</text>"#,
            top - 7.0
        );
        let y_ticks = (y_top / y_step).round() as u64;
        for k in 0..=y_ticks {
            let v = k as f64 * y_step;
            let y = y_of(v);
            let _ = writeln!(
                out,
                r##"<line x1="{PLOT_LEFT:.1}" y1="{y:.1}" x2="{PLOT_RIGHT:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                PLOT_LEFT - 5.0,
                y + 4.0,
                tick_label(v, y_step, y_top)
            );
        }
        for &t in &x_ticks {
            let x = x_of(t);
            let _ =
                writeln!(out, r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#f0f0f0"/>"##);
            if i + 1 == panels.len() {
                let _ = writeln!(
                    out,
                    r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    bottom + 15.0,
                    tick_label(t, x_step, duration_s)
                );
            }
        }
        let _ = writeln!(
            out,
            r##"<rect x="{PLOT_LEFT:.1}" y="{top:.1}" width="{:.1}" height="{PANEL_HEIGHT:.1}" fill="none" stroke="#999"/>"##,
            PLOT_RIGHT - PLOT_LEFT
        );
        let _ = writeln!(out, r#"<g clip-path="url(#plot-clip-{i})">"#);
        let pixels = (PLOT_RIGHT - PLOT_LEFT) as usize;
        for (j, series) in panel.series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let mut points = downsample(&series.points, duration_s, pixels);
            match points.last() {
                Some(&(t_last, v_last)) if series.step && t_last < duration_s => points.push((duration_s, v_last)),
                _ => {}
            }
            let mut coords = String::new();
            for (n, &(t, v)) in points.iter().enumerate() {
                if series.step && n > 0 {
                    let _ = write!(coords, "{:.1},{:.1} ", x_of(t), y_of(points[n - 1].1));
                }
                let _ = write!(coords, "{:.1},{:.1} ", x_of(t), y_of(v));
            }
            match points.as_slice() {
                [] => {}
                [(t, v)] => {
                    let _ =
                        writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#, x_of(*t), y_of(*v));
                }
                _ => {
                    let _ = writeln!(
                        out,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5" stroke-linejoin="round"/>"#,
                        coords.trim_end()
                    );
                }
            }
        }
        out.push_str("</g>\n<g class=\"legend\">\n");
        for (j, series) in panel.series.iter().enumerate() {
            let y = top + 10.0 + j as f64 * 16.0;
            let _ = writeln!(
                out,
                r#"<rect x="{LEGEND_X:.1}" y="{:.1}" width="14.0" height="3.0" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                y - 1.5,
                PALETTE[j % PALETTE.len()],
                LEGEND_X + 19.0,
                y + 4.0,
                escape(&series.name)
            );
        }
        out.push_str("</g>\n</g>\n");
    }
    if !panels.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            height - 10.0
        );
    }

    out.push_str("<g class=\"markers\">\n");
    let last_bottom = if panels.is_empty() { HEADER + band } else { plot_top(panels.len() - 1) + PANEL_HEIGHT };
    for marker in markers {
        let x = x_of(marker.at_s);
        let label_y = HEADER + band - 6.0;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{last_bottom:.1}" stroke="#c0392b" stroke-dasharray="5,4"/><text x="{x:.1}" y="{label_y:.1}" fill="#c0392b" transform="rotate(-35 {x:.1} {label_y:.1})">{}</text>"##,
            HEADER + band - 2.0,
            escape(&marker.label)
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

/// The latest finite time of any point, or 1 second when there is none.
fn data_end_s(panels: &[Panel]) -> f64 {
    let points = panels.iter().flat_map(|p| &p.series).flat_map(|s| &s.points);
    let end_s = points.filter(|(t, v)| t.is_finite() && v.is_finite()).fold(0.0_f64, |end, &(t, _)| end.max(t));
    if end_s > 0.0 { end_s } else { 1.0 }
}

/// The largest finite value in a panel, or 1 when there is no positive one.
fn panel_max(panel: &Panel) -> f64 {
    let points = panel.series.iter().flat_map(|s| &s.points);
    let max = points.filter(|(t, v)| t.is_finite() && v.is_finite()).fold(0.0_f64, |max, &(_, v)| max.max(v));
    if max > 0.0 { max } else { 1.0 }
}

/// The finite points, or at most two per pixel column (the first minimum and first maximum, in
/// their original order) when there are more than [`MAX_POINTS_PER_SERIES`].
fn downsample(points: &[(f64, f64)], duration_s: f64, pixels: usize) -> Vec<(f64, f64)> {
    let finite: Vec<(f64, f64)> = points.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    if finite.len() <= MAX_POINTS_PER_SERIES {
        return finite;
    }
    let pixels = pixels.clamp(1, MAX_POINTS_PER_SERIES / 2);
    let mut columns: Vec<Option<(usize, usize)>> = vec![None; pixels];
    for (n, &(t, v)) in finite.iter().enumerate() {
        let column = ((t / duration_s * pixels as f64).floor().max(0.0) as usize).min(pixels - 1);
        let slot = columns[column].get_or_insert((n, n));
        if v < finite[slot.0].1 {
            slot.0 = n;
        }
        if v > finite[slot.1].1 {
            slot.1 = n;
        }
    }
    let mut kept = Vec::with_capacity(2 * pixels);
    for (lo, hi) in columns.into_iter().flatten() {
        kept.push(finite[lo.min(hi)]);
        if lo != hi {
            kept.push(finite[lo.max(hi)]);
        }
    }
    kept
}

/// A round step (1, 2 or 5 times a power of ten) at or above `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let base = 10f64.powi(raw.log10().floor() as i32);
    let fraction = raw / base;
    let nice = if fraction <= 1.0 + 1e-9 {
        1.0
    } else if fraction <= 2.0 + 1e-9 {
        2.0
    } else if fraction <= 5.0 + 1e-9 {
        5.0
    } else {
        10.0
    };
    nice * base
}

/// `value` with as many decimals as `step` needs, in k or M when the axis reaches `axis_max`.
fn tick_label(value: f64, step: f64, axis_max: f64) -> String {
    let (divisor, suffix) = if axis_max >= 1e7 {
        (1e6, "M")
    } else if axis_max >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let decimals = (-(step / divisor).log10().floor() + 1e-9).max(0.0) as usize;
    format!("{:.*}{suffix}", decimals, value / divisor)
}

/// `text` made safe inside an XML element or attribute; control characters XML forbids are dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: Vec<(f64, f64)>, step: bool) -> Series {
        Series { name: name.to_string(), points, step }
    }

    fn sample() -> (Vec<Panel>, Vec<Marker>) {
        let latency = (0..600).map(|i| (i as f64 * 0.1, 20.0 + (i % 37) as f64)).collect();
        let replicas = vec![(0.0, 2.0), (12.5, 3.0), (40.0, 1.0)];
        let panels = vec![
            Panel { title: "latency".into(), unit: "ms".into(), series: vec![series("p99", latency, false)] },
            Panel { title: "replicas".into(), unit: String::new(), series: vec![series("web", replicas, true)] },
        ];
        let markers = vec![Marker { at_s: 20.0, label: "crash-node 2".into() }];
        (panels, markers)
    }

    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("</svg>").count(), 1);
        assert_eq!(svg.matches("<g ").count() + svg.matches("<g>").count(), svg.matches("</g>").count());
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn the_svg_is_well_formed_and_names_every_series_and_marker() {
        let (panels, markers) = sample();
        let svg = timeline_svg("run 1", &panels, &markers, 60.0);
        assert_well_formed(&svg);
        for needle in ["run 1", "latency (ms)", "p99", "web", "crash-node 2", "stroke-dasharray", "time (s)"] {
            assert!(svg.contains(needle), "missing {needle}");
        }
        assert!(!svg.contains("<script") && !svg.contains("href"));
    }

    #[test]
    fn identical_input_gives_identical_output() {
        let (panels, markers) = sample();
        assert_eq!(timeline_svg("t", &panels, &markers, 60.0), timeline_svg("t", &panels, &markers, 60.0));
    }

    #[test]
    fn labels_are_escaped_for_xml() {
        let panels = vec![Panel {
            title: "a<b".into(),
            unit: "\"q\"".into(),
            series: vec![series("x & <y>", vec![(0.0, 1.0), (1.0, 2.0)], false)],
        }];
        let markers = vec![Marker { at_s: 0.5, label: "kill <node> & 'wait'\u{7}".into() }];
        let svg = timeline_svg("<title>", &panels, &markers, 1.0);
        assert_well_formed(&svg);
        assert!(svg.contains("x &amp; &lt;y&gt;") && svg.contains("kill &lt;node&gt; &amp; &apos;wait&apos;<"));
        assert!(svg.contains("&lt;title&gt;") && svg.contains("a&lt;b (&quot;q&quot;)"));
        assert!(!svg.contains("<y>") && !svg.contains("<node>") && !svg.contains('\u{7}'));
    }

    #[test]
    fn empty_series_empty_panels_and_nan_values_do_not_panic() {
        let panels = vec![
            Panel { title: "empty".into(), unit: "rps".into(), series: vec![] },
            Panel {
                title: "odd".into(),
                unit: String::new(),
                series: vec![
                    series("none", vec![], true),
                    series("nan", vec![(f64::NAN, 1.0), (1.0, f64::NAN), (2.0, f64::INFINITY)], false),
                    series("one", vec![(1.0, 5.0), (f64::NAN, f64::NAN)], false),
                ],
            },
        ];
        let markers = vec![Marker { at_s: f64::NAN, label: "never".into() }];
        for duration_s in [10.0, 0.0, f64::NAN] {
            let svg = timeline_svg("edge cases", &panels, &markers, duration_s);
            assert_well_formed(&svg);
            assert!(svg.contains("none") && svg.contains("nan") && svg.contains("<circle"));
        }
        assert_well_formed(&timeline_svg("nothing", &[], &[], 0.0));
    }

    #[test]
    fn long_series_are_downsampled_to_min_and_max_per_pixel() {
        let points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64 / 1000.0, (i % 1000) as f64)).collect();
        let kept = downsample(&points, 100.0, 730);
        assert!(kept.len() <= MAX_POINTS_PER_SERIES && kept.len() > 700);
        assert!(kept.iter().any(|&(_, v)| v == 999.0) && kept.iter().any(|&(_, v)| v == 0.0));
        assert!(kept.windows(2).all(|w| w[0].0 <= w[1].0));
        let panels =
            vec![Panel { title: "load".into(), unit: "rps".into(), series: vec![series("big", points, false)] }];
        let svg = timeline_svg("big", &panels, &[], 100.0);
        assert_well_formed(&svg);
        assert!(svg.len() < 100_000);
    }

    #[test]
    fn axes_use_round_numbers() {
        assert_eq!(
            [nice_step(0.3), nice_step(1.0), nice_step(1.7), nice_step(4.2), nice_step(7.5)],
            [0.5, 1.0, 2.0, 5.0, 10.0]
        );
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(tick_label(2.5, 0.5, 5.0), "2.5");
        assert_eq!(tick_label(40.0, 10.0, 100.0), "40");
        assert_eq!(tick_label(25_000.0, 5_000.0, 50_000.0), "25k");
        assert_eq!(tick_label(1.5e7, 5e6, 2e7), "15M");
        let panels =
            vec![Panel { title: "p".into(), unit: String::new(), series: vec![series("s", vec![(0.0, 87.0)], false)] }];
        let svg = timeline_svg("t", &panels, &[], 60.0);
        assert!(svg.contains(">100</text>") && svg.contains(">60</text>"));
    }
}
