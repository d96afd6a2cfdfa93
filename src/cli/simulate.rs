//! `onepie simulate`: the designs' actors on simulated time, one point or a sweep, as a table,
//! JSON, CSV or an SVG chart.

use super::CliError;
use crate::models::simulate::{
    parse_secs, show_secs, Dist, SimParams, Summary, MAX_CRASH_RATE, MAX_SECS, MIN_TIMEOUT,
};
use crate::models::{self, Design};
use clap::Args;
use std::io::Write;

#[derive(Args, Debug)]
pub(super) struct SimulateArgs {
    /// The design, or several separated by commas (one line each on the chart).
    designs: String,
    /// Orders per run (1–255).
    #[arg(long, default_value_t = 10)]
    orders: u16,
    /// Workers (1–64).
    #[arg(long, default_value_t = 2)]
    workers: u16,
    /// How long the work takes: 2s, uniform:1s..3s, exp:1s or lognormal:1s,0.5.
    #[arg(long, default_value = "exp:1s", value_parser = Dist::parse)]
    work: Dist,
    /// The queue's visibility timeout (also a window house's clock tick).
    #[arg(long, default_value = "2s", value_parser = positive_secs)]
    timeout: f64,
    /// Crashes per second of a crashable actor's up time.
    #[arg(long, default_value_t = 0.0, value_parser = rate, allow_negative_numbers = true)]
    crash_rate: f64,
    /// How long a crashed actor stays down.
    #[arg(long, default_value = "1s", value_parser = secs)]
    restart: f64,
    /// The probability that a message between two actors is lost (0–1).
    #[arg(long, default_value_t = 0.0, value_parser = probability, allow_negative_numbers = true)]
    loss_rate: f64,
    /// Each message's delay (a distribution, like --work).
    #[arg(long, default_value = "0s", value_parser = Dist::parse)]
    delay: Dist,
    /// Runs per design (and per sweep point).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The first run's seed; run r uses seed + r.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sweep one parameter: timeout=1s..60s:20, crash-rate=0..0.5:11 or loss-rate=0..0.3:7.
    #[arg(long, value_parser = Sweep::parse)]
    sweep: Option<Sweep>,
    /// Draw the sweep as an SVG chart in this file.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    svg: Option<std::path::PathBuf>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long)]
    csv: bool,
    /// Threads [default: every core]; the numbers do not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
}

/// A swept parameter and its values.
#[derive(Clone, Debug)]
pub(super) struct Sweep {
    name: &'static str,
    values: Vec<f64>,
}

impl Sweep {
    fn parse(text: &str) -> Result<Sweep, String> {
        let bad = || {
            format!(
                "`{text}` is not a sweep like timeout=1s..60s:20, crash-rate=0..0.5:11 or loss-rate=0..0.3:7"
            )
        };
        let (name, range) = text.split_once('=').ok_or_else(bad)?;
        let (range, steps) = range.split_once(':').ok_or_else(bad)?;
        let (from, to) = range.split_once("..").ok_or_else(bad)?;
        let steps: usize = steps.parse().map_err(|_| bad())?;
        if !(2..=1000).contains(&steps) {
            return Err(format!("`{text}`: the steps must be between 2 and 1000"));
        }
        let (name, from, to): (&'static str, f64, f64) = match name {
            "timeout" => (
                "timeout",
                positive_secs(from).map_err(|_| bad())?,
                positive_secs(to).map_err(|_| bad())?,
            ),
            "crash-rate" => ("crash-rate", rate(from)?, rate(to)?),
            "loss-rate" => ("loss-rate", probability(from)?, probability(to)?),
            _ => return Err(bad()),
        };
        let values = (0..steps)
            .map(|i| from + (to - from) * i as f64 / (steps - 1) as f64)
            .collect();
        Ok(Sweep { name, values })
    }

    fn apply(&self, p: &SimParams, value: f64) -> SimParams {
        let mut p = p.clone();
        match self.name {
            "timeout" => p.timeout = value,
            "crash-rate" => p.crash_rate = value,
            _ => p.loss_rate = value,
        }
        p
    }

    fn show(&self, value: f64) -> String {
        match self.name {
            "timeout" => show_secs(value),
            _ => format!("{value:.3}"),
        }
    }
}

fn secs(text: &str) -> Result<f64, String> {
    parse_secs(text).ok_or_else(|| {
        format!("`{text}` is not a duration like 2s or 500ms (at most {MAX_SECS} s)")
    })
}

fn positive_secs(text: &str) -> Result<f64, String> {
    match secs(text)? {
        s if s >= MIN_TIMEOUT => Ok(s),
        _ => Err(format!("`{text}`: the timeout must be at least 1ms")),
    }
}

fn rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=MAX_CRASH_RATE).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{text}` is not a rate (a number from 0 to {MAX_CRASH_RATE}, per second)"
        )),
    }
}

fn probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("`{text}` is not a probability between 0 and 1")),
    }
}

/// One row: a design at one sweep value.
#[derive(serde::Serialize)]
struct Row<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(flatten)]
    summary: &'a Summary,
    duplicated_rate: f64,
    lost_rate: f64,
    wasted_pies_per_order: f64,
    handouts_per_order: f64,
}

pub(super) fn run(a: SimulateArgs, out: &mut impl Write) -> Result<(), CliError> {
    let designs: Vec<&'static Design> = a
        .designs
        .split(',')
        .map(|name| models::find(name.trim()))
        .collect::<Result<_, _>>()?;
    let range = |name, value: u16, min: u16, max: u16| {
        if (min..=max).contains(&value) {
            Ok(value as u8)
        } else {
            Err(models::CheckError::OutOfRange {
                name,
                value: value.into(),
                min: min.into(),
                max: max.into(),
            })
        }
    };
    let base = SimParams {
        orders: range("orders", a.orders, 1, 255)?,
        workers: range("workers", a.workers, 1, 64)?,
        work: a.work,
        timeout: a.timeout,
        delay: a.delay,
        crash_rate: a.crash_rate,
        restart: a.restart,
        loss_rate: a.loss_rate,
        runs: a.runs,
        seed: a.seed,
    };
    let threads = a
        .threads
        .map_or_else(models::check::available_threads, usize::from);
    let points: Vec<Option<f64>> = match &a.sweep {
        Some(s) => s.values.iter().copied().map(Some).collect(),
        None => vec![None],
    };
    // A bar on long runs (drawn only on a terminal).
    let total = (points.len() * designs.len()) as u64 * u64::from(a.runs);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} runs ({per_sec}, eta {eta})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut results: Vec<(Option<f64>, Summary)> = Vec::new();
    for &value in &points {
        let p = match (&a.sweep, value) {
            (Some(s), Some(v)) => s.apply(&base, v),
            _ => base.clone(),
        };
        for d in &designs {
            let tick = || bar.inc(1);
            results.push((value, d.simulate(&p, threads, &tick)?));
        }
    }
    bar.finish_and_clear();
    let parameter = a.sweep.as_ref().map(|s| s.name);
    let rows: Vec<Row> = results
        .iter()
        .map(|(value, s)| Row {
            parameter,
            value: *value,
            summary: s,
            duplicated_rate: s.rate(s.duplicated),
            lost_rate: s.rate(s.lost),
            wasted_pies_per_order: s.rate(s.wasted_pies),
            handouts_per_order: s.rate(s.handouts),
        })
        .collect();
    if a.json {
        serde_json::to_writer_pretty(&mut *out, &rows).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else if a.csv {
        write_csv(out, &rows)?;
    } else {
        let swept = |name: &str, value: String| match a.sweep.as_ref() {
            Some(s) if s.name == name => format!("{name} swept"),
            _ => value,
        };
        writeln!(
            out,
            "{} orders/run, {} workers, work {}, {}, delay {}, {} (down {}), {}, {} runs, seed {}",
            base.orders,
            base.workers,
            base.work,
            swept("timeout", format!("timeout {}", show_secs(base.timeout))),
            base.delay,
            swept("crash-rate", format!("crash rate {}/s", base.crash_rate)),
            show_secs(base.restart),
            swept("loss-rate", format!("loss rate {}", base.loss_rate)),
            base.runs,
            base.seed
        )?;
        write_table(out, &rows, a.sweep.as_ref())?;
    }
    if let (Some(path), Some(sweep)) = (&a.svg, &a.sweep) {
        chart(path, sweep, &designs, &results, &base)?;
        if !a.json && !a.csv {
            writeln!(out, "chart: {}", path.display())?;
        }
    }
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn opt_secs(x: Option<f64>) -> String {
    x.map_or("–".into(), |s| format!("{s:.2}s"))
}

fn write_table(out: &mut impl Write, rows: &[Row], sweep: Option<&Sweep>) -> std::io::Result<()> {
    let w = rows
        .iter()
        .map(|r| r.summary.design.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let head = sweep.map_or(String::new(), |s| format!("{:>10}  ", s.name));
    writeln!(
        out,
        "{head}{:<w$}  {:>8}  {:>10}  {:>8}  {:>12}  {:>10}  {:>8}  {:>8}",
        "design", "orders", "duplicated", "lost", "wasted/order", "hand-outs", "p50 pie", "p99 pie"
    )?;
    for r in rows {
        let s = r.summary;
        let v = match (sweep, r.value) {
            (Some(sw), Some(v)) => format!("{:>10}  ", sw.show(v)),
            _ => String::new(),
        };
        writeln!(
            out,
            "{v}{:<w$}  {:>8}  {:>10}  {:>8}  {:>12.3}  {:>10.3}  {:>8}  {:>8}",
            s.design,
            s.orders,
            pct(r.duplicated_rate),
            pct(r.lost_rate),
            r.wasted_pies_per_order,
            r.handouts_per_order,
            opt_secs(s.p50_time_to_pie),
            opt_secs(s.p99_time_to_pie)
        )?;
        if s.cut_short > 0 {
            writeln!(out, "  ({} runs stopped at the time horizon)", s.cut_short)?;
        }
    }
    Ok(())
}

fn write_csv(out: &mut impl Write, rows: &[Row]) -> std::io::Result<()> {
    writeln!(
        out,
        "parameter,value,design,runs,orders,duplicated,extra_pies,wasted_pies,lost,unexpected,handouts,handed_out_again,cut_short,p50_time_to_pie,p99_time_to_pie"
    )?;
    for r in rows {
        let s = r.summary;
        let o = |x: Option<f64>| x.map_or(String::new(), |v| v.to_string());
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.parameter.unwrap_or(""),
            o(r.value),
            s.design,
            s.runs,
            s.orders,
            s.duplicated,
            s.extra_pies,
            s.wasted_pies,
            s.lost,
            s.unexpected,
            s.handouts,
            s.handed_out_again,
            s.cut_short,
            o(s.p50_time_to_pie),
            o(s.p99_time_to_pie)
        )?;
    }
    Ok(())
}

/// Four panels against the swept parameter, one line per design: duplicated effects, wasted
/// pies, lost orders, and time to the first pie (p50 solid, p99 dashed).
fn chart(
    path: &std::path::Path,
    sweep: &Sweep,
    designs: &[&Design],
    results: &[(Option<f64>, Summary)],
    base: &SimParams,
) -> Result<(), CliError> {
    use plotters::prelude::*;
    let draw_err = |e: String| CliError::Chart {
        path: path.to_path_buf(),
        reason: e,
    };
    let root = SVGBackend::new(path, (1200, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
    let title = format!(
        "{} orders/run × {} runs, {} workers, work {}, delay {}, crash rate {}/s, loss rate {}",
        base.orders,
        base.runs,
        base.workers,
        base.work,
        base.delay,
        base.crash_rate,
        base.loss_rate
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| draw_err(e.to_string()))?;
    let panels = root.split_evenly((2, 2));
    let xs: Vec<f64> = sweep.values.clone();
    let (x0, x1) = (xs[0].min(xs[xs.len() - 1]), xs[0].max(xs[xs.len() - 1]));
    let x_label = match sweep.name {
        "timeout" => "visibility timeout (s)",
        "crash-rate" => "crash rate (per second)",
        _ => "loss rate",
    };
    type Metric = fn(&Summary) -> Option<f64>;
    let metrics: [(&str, Metric, Option<Metric>); 4] = [
        (
            "duplicated effects (% of orders)",
            |s| Some(100.0 * s.rate(s.duplicated)),
            None,
        ),
        (
            "wasted pies (per order)",
            |s| Some(s.rate(s.wasted_pies)),
            None,
        ),
        (
            "lost orders (% of orders)",
            |s| Some(100.0 * s.rate(s.lost)),
            None,
        ),
        (
            "time to pie (s): p50 solid, p99 dashed",
            |s| s.p50_time_to_pie,
            Some(|s| s.p99_time_to_pie),
        ),
    ];
    for (panel, (label, metric, second)) in panels.iter().zip(metrics) {
        let series = |d: &Design, m: Metric| -> Vec<(f64, f64)> {
            results
                .iter()
                .filter(|(_, s)| s.design == d.name)
                .filter_map(|(v, s)| Some(((*v)?, m(s)?)))
                .collect()
        };
        let mut top: f64 = 0.0;
        for d in designs {
            for m in std::iter::once(metric).chain(second) {
                top = series(d, m).iter().map(|p| p.1).fold(top, f64::max);
            }
        }
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(panel)
            .caption(label, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0.0..top)
            .map_err(|e| draw_err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
        for (i, d) in designs.iter().enumerate() {
            // Tableau's ten colours: distinct on white, in order.
            const COLORS: [(u8, u8, u8); 10] = [
                (214, 39, 40),
                (31, 119, 180),
                (44, 160, 44),
                (255, 127, 14),
                (148, 103, 189),
                (140, 86, 75),
                (227, 119, 194),
                (127, 127, 127),
                (188, 189, 34),
                (23, 190, 207),
            ];
            let (r, g, b) = COLORS[i % COLORS.len()];
            let color = RGBColor(r, g, b).to_rgba();
            chart
                .draw_series(LineSeries::new(series(d, metric), color.stroke_width(2)))
                .map_err(|e| draw_err(e.to_string()))?
                .label(d.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
            if let Some(m) = second {
                chart
                    .draw_series(DashedLineSeries::new(
                        series(d, m),
                        6,
                        4,
                        color.stroke_width(2),
                    ))
                    .map_err(|e| draw_err(e.to_string()))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| draw_err(e.to_string()))?;
    }
    root.present().map_err(|e| draw_err(e.to_string()))?;
    Ok(())
}
