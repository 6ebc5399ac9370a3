//! Self-contained HTML reports (`facto chaos --report`, the simulator's `--trace`): one file
//! with its style inline and its pictures as inline SVG, no script and nothing fetched, so it
//! opens anywhere and can be attached to a bug report. Everything written is well-formed XML,
//! which is how the tests parse it.

use std::fmt::Write;

/// `text` with the characters HTML and XML give meaning to escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The style every report shares (light and dark).
const STYLE: &str = "
:root { --bg: #f7f7f5; --fg: #1d1d1f; --muted: #6b6b70; --line: #dcdcdf; --card: #fff;
  --ok: #1f8a3b; --bad: #c0392b; --warn: #c77c02; --part: #7b3fb5; --accent: #0b6bcb;
  font-family: system-ui, sans-serif; }
@media (prefers-color-scheme: dark) { :root { --bg: #17181b; --fg: #e8e8ea; --muted: #9a9aa2;
  --line: #36373d; --card: #222327; --ok: #4cc26d; --bad: #ff6b5b; --warn: #f0a830; --part: #b07de0;
  --accent: #5aa9ff; } }
body { background: var(--bg); color: var(--fg); margin: 1rem 1.5rem; line-height: 1.4; }
svg { background: var(--card); border: 1px solid var(--line); max-width: 100%; height: auto; }
svg text { fill: var(--fg); font-size: 11px; }
svg .muted, .muted { fill: var(--muted); color: var(--muted); }
svg .grid { stroke: var(--line); }
pre { background: var(--card); border: 1px solid var(--line); padding: 0.6rem; overflow-x: auto; }
table { border-collapse: collapse; } td, th { padding: 0.15rem 0.7rem; border-bottom: 1px solid var(--line); text-align: left; }
";

/// A whole page: `title`, the shared style plus `style`, and `body`.
pub fn page(title: &str, style: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>{}</title>\n\
         <style>{STYLE}{style}</style>\n</head>\n<body>\n{body}</body>\n</html>\n",
        escape(title)
    )
}

/// A time axis along the top of a picture: a label every `step_ms` from 0 to `span_ms` at
/// `x(ms)`, each with a grid line from `grid_top` down to `grid_bottom`.
pub fn time_axis(span_ms: u64, step_ms: u64, x: impl Fn(u64) -> f64, grid_top: f64, grid_bottom: f64) -> String {
    let mut out = String::new();
    for at in (0..=span_ms).step_by(step_ms.max(1) as usize) {
        let x = x(at);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{grid_top:.1}\" x2=\"{x:.1}\" y2=\"{grid_bottom:.1}\"/>\
             <text class=\"muted\" x=\"{x:.1}\" y=\"14\" text-anchor=\"middle\">{}</text>",
            duration(at)
        );
    }
    out
}

/// Milliseconds as people read them: "850 ms", "12.4 s".
pub fn duration(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// A time axis from 0 to `span_ms`: the step between ticks (1, 2, 5 × a power of ten ms)
/// that gives at most `ticks_max` ticks.
pub fn tick_step_ms(span_ms: u64, ticks_max: u64) -> u64 {
    let mut step = 1;
    loop {
        for k in [1, 2, 5] {
            if span_ms / (step * k) < ticks_max {
                return step * k;
            }
        }
        step *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(escape("<b a=\"1\">&'"), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn ticks_stay_under_the_bound() {
        assert_eq!(tick_step_ms(30_000, 12), 5_000);
        assert_eq!(tick_step_ms(900, 10), 100);
        assert_eq!(tick_step_ms(0, 10), 1);
    }
}
