//! Class labels as the metrics compare them. The held-out file may hold `1` where the model
//! answers INT64 `1` or the string `"1"`; all three must be one class, and classes must sort
//! as scikit-learn sorts `classes_` (numbers by value, strings by code point).

use std::{collections::HashMap, fmt};

/// One class label: an integer when it reads as one, text otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    Int(i64),
    Text(String),
}

impl Label {
    /// `"7"` is `Int(7)`, anything that is not an integer stays text.
    pub fn parse(text: &str) -> Label {
        text.parse::<i64>()
            .map_or_else(|_| Label::Text(text.to_owned()), Label::Int)
    }

    /// An integral, finite number as a label; `None` for `0.5`, NaN or out-of-range values.
    pub(crate) fn from_number(value: f64) -> Option<Label> {
        const LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53: every integer below is exact
        (value.fract() == 0.0 && value.abs() <= LIMIT).then_some(Label::Int(value as i64))
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Int(value) => write!(f, "{value}"),
            Label::Text(text) => f.write_str(text),
        }
    }
}

/// The labels of many rows, kept as 4-byte indices into a table of the distinct labels, so a
/// million rows of string labels cost 4 MB rather than a million strings.
#[derive(Debug, Clone, Default)]
pub struct LabelColumn {
    ids: Vec<u32>,
    distinct: Vec<Label>,
    index: HashMap<Label, u32>,
}

impl LabelColumn {
    pub(crate) fn push(&mut self, label: Label) {
        let next = u32::try_from(self.distinct.len()).expect("fewer than 2^32 distinct labels");
        let id = *self.index.entry(label).or_insert_with_key(|label| {
            self.distinct.push(label.clone());
            next
        });
        self.ids.push(id);
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Every label seen, in order of first appearance.
    pub(crate) fn distinct(&self) -> &[Label] {
        &self.distinct
    }

    /// Each row's label as a position in `classes`; `Err` names a label `classes` lacks.
    pub(crate) fn positions_in(&self, classes: &[Label]) -> Result<Vec<u32>, Label> {
        let remap = self
            .distinct
            .iter()
            .map(
                |label| match classes.iter().position(|class| class == label) {
                    Some(position) => Ok(position as u32),
                    None => Err(label.clone()),
                },
            )
            .collect::<Result<Vec<u32>, Label>>()?;
        Ok(self.ids.iter().map(|&id| remap[id as usize]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_numeric_text_are_one_label() {
        assert_eq!(Label::parse("1"), Label::Int(1));
        assert_eq!(Label::from_number(1.0), Some(Label::Int(1)));
        assert_eq!(Label::from_number(0.5), None);
        assert_eq!(Label::from_number(f64::NAN), None);
        assert_eq!(Label::parse("yes"), Label::Text("yes".to_owned()));
    }

    #[test]
    fn labels_sort_numbers_by_value() {
        let mut labels = vec![Label::parse("10"), Label::parse("9"), Label::parse("-1")];
        labels.sort();
        assert_eq!(labels, [Label::Int(-1), Label::Int(9), Label::Int(10)]);
    }

    #[test]
    fn column_interns_and_maps_to_classes() {
        let mut column = LabelColumn::default();
        for text in ["b", "a", "b", "c"] {
            column.push(Label::parse(text));
        }
        assert_eq!(column.distinct().len(), 3);
        let classes: Vec<Label> = ["a", "b", "c"].map(Label::parse).into();
        assert_eq!(column.positions_in(&classes).unwrap(), [1, 0, 1, 2]);
        assert_eq!(
            column.positions_in(&classes[..2]).unwrap_err(),
            Label::parse("c")
        );
    }
}
