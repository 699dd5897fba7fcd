//! Argo Rollouts' `successCondition`s, evaluated as its controller evaluates them, for the subset
//! of the expr language (github.com/expr-lang/expr) that pinserve's AnalysisTemplate uses:
//! `result`, `result[N]`, `len(...)`, `isNaN(...)`, numbers, comparisons, `!`, `&&`, `||` and
//! parentheses; and, through [`evaluate_with`], Argo Events' filter `exprs` over named fields,
//! which add double-quoted strings compared with `==` and `!=`. Anything else is an error rather than a guess, so the test's verdict follows the
//! YAML: change a condition there and the test judges by the new one, or says it cannot.
//!
//! The semantics that matter are expr's: `&&` and `||` short-circuit (so `len(result) > 0 &&
//! result[0] < 1` never indexes an empty result), indexing past the end is an error (which Argo
//! records as a measurement error, not a failure), and comparisons follow IEEE 754, so every
//! comparison with NaN is false.

use std::{collections::BTreeMap, fmt};

/// What a Prometheus query gave Argo Rollouts' provider: a vector becomes a list of its sample
/// values (`[]float64`), a scalar a number.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Bool(bool),
    List(Vec<f64>),
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(number) => write!(f, "{number}"),
            Value::Bool(boolean) => write!(f, "{boolean}"),
            Value::List(values) => write!(f, "{values:?}"),
            Value::Text(text) => write!(f, "{text:?}"),
        }
    }
}

/// What a measurement's conditions make of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Successful,
    Failed,
    Inconclusive,
}

/// A measurement's phase from a metric's `successCondition` and `failureCondition`, as Argo
/// Rollouts decides it: with only one condition, the other is its negation; a met failure
/// condition wins; with both and neither met, the measurement is Inconclusive.
pub fn judge(
    success: Option<&str>,
    failure: Option<&str>,
    result: &Value,
) -> Result<Phase, String> {
    let (succeeded, failed) = match (success, failure) {
        (None, None) => return Ok(Phase::Successful),
        (Some(success), None) => {
            let met = evaluate(success, result)?;
            (met, !met)
        }
        (None, Some(failure)) => {
            let met = evaluate(failure, result)?;
            (!met, met)
        }
        (Some(success), Some(failure)) => (evaluate(success, result)?, evaluate(failure, result)?),
    };
    Ok(if failed {
        Phase::Failed
    } else if succeeded {
        Phase::Successful
    } else {
        Phase::Inconclusive
    })
}

/// Evaluates `condition` with `result` bound to a measurement, as Argo Rollouts does.
pub fn evaluate(condition: &str, result: &Value) -> Result<bool, String> {
    evaluate_with(
        condition,
        &BTreeMap::from([("result".to_owned(), result.clone())]),
    )
}

/// Evaluates `condition` with its identifiers bound to `variables`; an identifier without a
/// value is an error.
pub fn evaluate_with(condition: &str, variables: &BTreeMap<String, Value>) -> Result<bool, String> {
    let tokens = tokenize(condition)?;
    let mut parser = Parser { tokens, next: 0 };
    let expression = parser.disjunction()?;
    if let Some(token) = parser.tokens.get(parser.next) {
        return Err(format!("unexpected {token:?} in {condition:?}"));
    }
    match expression.evaluate(variables)? {
        Value::Bool(verdict) => Ok(verdict),
        other => Err(format!("{condition:?} gives {other}, not a bool")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Text(String),
    Identifier(String),
    Symbol(&'static str),
}

const SYMBOLS: &[&str] = &[
    "&&", "||", "<=", ">=", "==", "!=", "<", ">", "!", "(", ")", "[", "]",
];

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text.trim_start();
    while let Some(first) = rest.chars().next() {
        let length = if first.is_ascii_digit() {
            let length = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let number = rest[..length]
                .parse()
                .map_err(|err| format!("bad number {:?}: {err}", &rest[..length]))?;
            tokens.push(Token::Number(number));
            length
        } else if first == '"' {
            let end = rest[1..]
                .find('"')
                .ok_or_else(|| format!("unclosed string in {text:?}"))?;
            tokens.push(Token::Text(rest[1..=end].to_owned()));
            end + 2
        } else if first.is_ascii_alphabetic() {
            let length = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push(Token::Identifier(rest[..length].to_owned()));
            length
        } else if let Some(symbol) = SYMBOLS.iter().find(|symbol| rest.starts_with(**symbol)) {
            tokens.push(Token::Symbol(symbol));
            symbol.len()
        } else {
            return Err(format!("unsupported syntax at {rest:?} in {text:?}"));
        };
        rest = rest[length..].trim_start();
    }
    Ok(tokens)
}

#[derive(Debug)]
enum Expression {
    Number(f64),
    Text(String),
    Variable(String),
    Index(Box<Expression>, usize),
    Len(Box<Expression>),
    IsNaN(Box<Expression>),
    Not(Box<Expression>),
    Compare(&'static str, Box<Expression>, Box<Expression>),
    And(Box<Expression>, Box<Expression>),
    Or(Box<Expression>, Box<Expression>),
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn peek_symbol(&self, symbols: &[&'static str]) -> Option<&'static str> {
        match self.tokens.get(self.next) {
            Some(Token::Symbol(symbol)) if symbols.contains(symbol) => Some(symbol),
            _ => None,
        }
    }

    fn take(&mut self) -> Result<Token, String> {
        let token = self
            .tokens
            .get(self.next)
            .cloned()
            .ok_or("the condition ends too early")?;
        self.next += 1;
        Ok(token)
    }

    fn expect(&mut self, symbol: &'static str) -> Result<(), String> {
        match self.take()? {
            Token::Symbol(found) if found == symbol => Ok(()),
            other => Err(format!("expected {symbol:?}, found {other:?}")),
        }
    }

    fn disjunction(&mut self) -> Result<Expression, String> {
        let mut left = self.conjunction()?;
        while self.peek_symbol(&["||"]).is_some() {
            self.next += 1;
            left = Expression::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Expression, String> {
        let mut left = self.comparison()?;
        while self.peek_symbol(&["&&"]).is_some() {
            self.next += 1;
            left = Expression::And(Box::new(left), Box::new(self.comparison()?));
        }
        Ok(left)
    }

    fn comparison(&mut self) -> Result<Expression, String> {
        let left = self.unary()?;
        match self.peek_symbol(&["<", "<=", ">", ">=", "==", "!="]) {
            Some(operator) => {
                self.next += 1;
                let right = self.unary()?;
                Ok(Expression::Compare(
                    operator,
                    Box::new(left),
                    Box::new(right),
                ))
            }
            None => Ok(left),
        }
    }

    fn unary(&mut self) -> Result<Expression, String> {
        if self.peek_symbol(&["!"]).is_some() {
            self.next += 1;
            return Ok(Expression::Not(Box::new(self.unary()?)));
        }
        let mut operand = self.primary()?;
        while self.peek_symbol(&["["]).is_some() {
            self.next += 1;
            let index = match self.take()? {
                Token::Number(n) if n.fract() == 0.0 && n >= 0.0 => n as usize,
                other => return Err(format!("unsupported index {other:?}")),
            };
            self.expect("]")?;
            operand = Expression::Index(Box::new(operand), index);
        }
        Ok(operand)
    }

    fn primary(&mut self) -> Result<Expression, String> {
        match self.take()? {
            Token::Number(number) => Ok(Expression::Number(number)),
            Token::Text(text) => Ok(Expression::Text(text)),
            Token::Symbol("(") => {
                let inner = self.disjunction()?;
                self.expect(")")?;
                Ok(inner)
            }
            Token::Identifier(name) if name == "len" || name == "isNaN" => {
                self.expect("(")?;
                let argument = Box::new(self.disjunction()?);
                self.expect(")")?;
                Ok(if name == "len" {
                    Expression::Len(argument)
                } else {
                    Expression::IsNaN(argument)
                })
            }
            Token::Identifier(name) => Ok(Expression::Variable(name)),
            other => Err(format!("unsupported {other:?}")),
        }
    }
}

impl Expression {
    fn evaluate(&self, variables: &BTreeMap<String, Value>) -> Result<Value, String> {
        Ok(match self {
            Expression::Number(number) => Value::Number(*number),
            Expression::Text(text) => Value::Text(text.clone()),
            Expression::Variable(name) => variables
                .get(name)
                .cloned()
                .ok_or_else(|| format!("unknown name {name:?}"))?,
            Expression::Index(list, index) => match list.evaluate(variables)? {
                Value::List(values) => Value::Number(*values.get(*index).ok_or_else(|| {
                    format!(
                        "index out of range: {index} (array length {})",
                        values.len()
                    )
                })?),
                other => return Err(format!("cannot index {other}")),
            },
            Expression::Len(list) => match list.evaluate(variables)? {
                Value::List(values) => Value::Number(values.len() as f64),
                other => return Err(format!("len() of {other}")),
            },
            Expression::IsNaN(number) => {
                Value::Bool(number_of(&number.evaluate(variables)?)?.is_nan())
            }
            Expression::Not(operand) => Value::Bool(!bool_of(&operand.evaluate(variables)?)?),
            Expression::And(left, right) => Value::Bool(
                bool_of(&left.evaluate(variables)?)? && bool_of(&right.evaluate(variables)?)?,
            ),
            Expression::Or(left, right) => Value::Bool(
                bool_of(&left.evaluate(variables)?)? || bool_of(&right.evaluate(variables)?)?,
            ),
            Expression::Compare(operator, left, right) => {
                let (left, right) = (left.evaluate(variables)?, right.evaluate(variables)?);
                if let (Value::Text(left), Value::Text(right)) = (&left, &right) {
                    return match *operator {
                        "==" => Ok(Value::Bool(left == right)),
                        "!=" => Ok(Value::Bool(left != right)),
                        other => Err(format!("strings compare with == and != only, not {other}")),
                    };
                }
                let (left, right) = (number_of(&left)?, number_of(&right)?);
                Value::Bool(match *operator {
                    "<" => left < right,
                    "<=" => left <= right,
                    ">" => left > right,
                    ">=" => left >= right,
                    "==" => left == right,
                    _ => left != right,
                })
            }
        })
    }
}

fn number_of(value: &Value) -> Result<f64, String> {
    match value {
        Value::Number(number) => Ok(*number),
        other => Err(format!("{other} is not a number")),
    }
}

fn bool_of(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(boolean) => Ok(*boolean),
        other => Err(format!("{other} is not a bool")),
    }
}
