//! pinserve's `/metrics` read back in the Prometheus text format: the one parser the tests use,
//! so that every test reads a series the same way.

use std::collections::HashMap;

/// One sample of a metric: its labels and its value.
#[derive(Debug)]
pub struct Sample {
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Every sample of `name` (exactly that name: `x_count` is not a sample of `x`).
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => parse_labels(rest)?,
                None => (HashMap::new(), rest.strip_prefix(' ')?),
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// The value of the one sample of `name` whose labels include all of `labels`, if it is
/// exposed; a test that names too few labels to single a sample out fails.
pub fn find_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut matching = samples(text, name).into_iter().filter(|sample| {
        labels
            .iter()
            .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
    });
    let found = matching.next()?;
    assert!(
        matching.next().is_none(),
        "more than one {name} sample has {labels:?}:\n{text}"
    );
    Some(found.value)
}

/// Like [`find_sample`], for a sample that must be exposed.
pub fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find_sample(text, name, labels)
        .unwrap_or_else(|| panic!("no {name} sample with {labels:?} in\n{text}"))
}

/// `name`'s value per value of `label`.
pub fn by_label(text: &str, name: &str, label: &str) -> HashMap<String, f64> {
    samples(text, name)
        .into_iter()
        .filter_map(|sample| Some((sample.labels.get(label)?.clone(), sample.value)))
        .collect()
}

/// Reads `key="value",...}` (the text after `{`); returns the labels and what follows the `}`.
fn parse_labels(mut rest: &str) -> Option<(HashMap<String, String>, &str)> {
    let mut labels = HashMap::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after.strip_prefix(' ')?));
        }
        let (key, after) = rest.split_once("=\"")?;
        let (value, after) = quoted(after)?;
        labels.insert(key.to_owned(), value);
        rest = after;
    }
}

/// A label value up to its closing quote, unescaped (`\\`, `\"`, `\n`), and the text after it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[index + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}
