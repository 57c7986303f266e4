//! Line charts for benchmark reports, written as SVG with plotters (no fonts or image codecs
//! needed: the SVG viewer renders the text).
use plotters::prelude::*;
use std::path::Path;

/// One line: its legend label, points `(x, y)` (x ascending) and whether it is drawn dashed.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
    /// Index into the palette; lines with the same colour differ by `dashed`.
    pub colour: usize,
}

/// Writes a line chart (one polyline and its points per line, a legend) to an SVG file.
pub fn line_chart_svg(path: &Path, title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> Result<(), String> {
    let pts = || lines.iter().flat_map(|l| l.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if !(x0.is_finite() && y0.is_finite()) {
        return Err("nothing to plot".into());
    }
    let pad = ((y1 - y0) * 0.1).max(y1.abs() * 0.02).max(1e-6);
    let (xr, yr) = (x0..x1.max(x0 + 1.0), (y0 - pad).max(0.0)..y1 + pad);
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, yr)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.4}"))
        .draw()
        .map_err(|x| e(&x))?;
    for l in lines {
        let colour = Palette99::pick(l.colour).to_rgba();
        let style = colour.stroke_width(2);
        let pts: Vec<(f64, f64)> = l.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        let series = if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))
        };
        let dashed = l.dashed;
        series.map_err(|x| e(&x))?.label(l.label.clone()).legend(move |(x, y)| {
            let end = if dashed { x + 10 } else { x + 24 };
            PathElement::new(vec![(x, y), (end, y)], style)
        });
        chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, colour.filled()))).map_err(|x| e(&x))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_line_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.svg");
        let lines = vec![
            Line {
                label: "adam raw".into(),
                points: vec![(0.0, 0.03), (10.0, 0.029), (50.0, 0.02)],
                dashed: false,
                colour: 0,
            },
            Line { label: "adam cleaned".into(), points: vec![(0.0, 0.031), (50.0, 0.028)], dashed: true, colour: 0 },
        ];
        line_chart_svg(&p, "R@20 against noise", "noise rate (%)", "test R@20", &lines).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for t in ["adam raw", "adam cleaned", "noise rate (%)", "test R@20", "R@20 against noise"] {
            assert!(svg.contains(t), "{t} missing");
        }
        assert!(svg.contains("stroke-dasharray") || svg.matches("<polyline").count() >= 3, "a dashed line");
        assert_eq!(line_chart_svg(&p, "t", "x", "y", &[]).unwrap_err(), "nothing to plot");
        assert!(line_chart_svg(&dir.path().join("no/such/dir/c.svg"), "t", "x", "y", &lines).is_err());
    }
}
