//! The expression language of causal-model functions: a variable's value computed from other variables, with no
//! code from files ever executed.
//!
//! ```text
//! W == X                      WX == YZ and not flag
//! if A > B then A else B      min(A, B) + 2 * (C % 3)
//! ```
//! Values are integers, booleans and strings. Operators, loosest first: `if … then … else`, `or`, `and`, `not`,
//! comparisons (`== != < <= > >=`), `+ -`, `* / %`, unary `-`; functions `min`, `max`, `abs`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A value of a causal-model variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Str(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    Variable(String),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(Box<Expr>, Op, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(String, Vec<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

const FUNCTIONS: &[&str] = &["min", "max", "abs"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(i64),
    Text(String),
    Word(String),
    Symbol(&'static str),
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    const SYMBOLS: &[&str] = &["==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "(", ")", ","];
    let mut tokens = Vec::new();
    let mut rest = source.trim_start();
    while let Some(c) = rest.chars().next() {
        if let Some(symbol) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            tokens.push(Token::Symbol(symbol));
            rest = &rest[symbol.len()..];
        } else if c.is_ascii_digit() {
            let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            let number = rest[..end].parse().map_err(|_| format!("the number {} is too large", &rest[..end]))?;
            tokens.push(Token::Number(number));
            rest = &rest[end..];
        } else if c == '"' || c == '\'' {
            let end = rest[1..].find(c).ok_or_else(|| format!("the string starting at {rest:?} is not closed"))?;
            tokens.push(Token::Text(rest[1..=end].to_string()));
            rest = &rest[end + 2..];
        } else if c.is_alphabetic() || c == '_' {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            tokens.push(Token::Word(rest[..end].to_string()));
            rest = &rest[end..];
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
        rest = rest.trim_start();
    }
    Ok(tokens)
}

/// Recursive descent over the token list, one method per precedence level.
struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Word(w)) if w == word);
        self.at += usize::from(found);
        found
    }

    fn eat_symbol(&mut self, symbol: &str) -> bool {
        let found = matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol);
        self.at += usize::from(found);
        found
    }

    fn expect_symbol(&mut self, symbol: &str) -> Result<(), String> {
        if self.eat_symbol(symbol) {
            Ok(())
        } else {
            Err(format!("expected '{symbol}', found {}", describe(self.peek())))
        }
    }

    fn expression(&mut self) -> Result<Expr, String> {
        if self.eat_word("if") {
            let condition = self.expression()?;
            if !self.eat_word("then") {
                return Err(format!("expected 'then', found {}", describe(self.peek())));
            }
            let yes = self.expression()?;
            if !self.eat_word("else") {
                return Err(format!("expected 'else', found {}", describe(self.peek())));
            }
            let no = self.expression()?;
            return Ok(Expr::If(Box::new(condition), Box::new(yes), Box::new(no)));
        }
        self.or()
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.eat_word("or") {
            left = Expr::Binary(Box::new(left), Op::Or, Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.eat_word("and") {
            left = Expr::Binary(Box::new(left), Op::And, Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.eat_word("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.sum()?;
        let ops = [("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)];
        for (symbol, op) in ops {
            if self.eat_symbol(symbol) {
                return Ok(Expr::Binary(Box::new(left), op, Box::new(self.sum()?)));
            }
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_symbol("+") {
                Op::Add
            } else if self.eat_symbol("-") {
                Op::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(Box::new(left), op, Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_symbol("*") {
                Op::Mul
            } else if self.eat_symbol("/") {
                Op::Div
            } else if self.eat_symbol("%") {
                Op::Rem
            } else {
                return Ok(left);
            };
            left = Expr::Binary(Box::new(left), op, Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_symbol("-") {
            return Ok(Expr::Negate(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::Number(n)) => Ok(Expr::Literal(Value::Int(n))),
            Some(Token::Text(s)) => Ok(Expr::Literal(Value::Str(s))),
            Some(Token::Symbol("(")) => {
                let inner = self.expression()?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            Some(Token::Word(word)) => match word.as_str() {
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                "if" | "then" | "else" | "and" | "or" | "not" => Err(format!("unexpected '{word}'")),
                _ if self.eat_symbol("(") => self.call(word),
                _ => Ok(Expr::Variable(word)),
            },
            other => Err(format!("expected a value, found {}", describe(other.as_ref()))),
        }
    }

    fn call(&mut self, name: String) -> Result<Expr, String> {
        if !FUNCTIONS.contains(&name.as_str()) {
            return Err(format!("unknown function '{name}' (known: {})", FUNCTIONS.join(", ")));
        }
        let mut arguments = vec![self.expression()?];
        while self.eat_symbol(",") {
            arguments.push(self.expression()?);
        }
        self.expect_symbol(")")?;
        let expected = if name == "abs" { 1 } else { 2 };
        if arguments.len() != expected {
            return Err(format!("{name} takes {expected} argument(s), got {}", arguments.len()));
        }
        Ok(Expr::Call(name, arguments))
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "the end".to_string(),
        Some(Token::Number(n)) => n.to_string(),
        Some(Token::Text(s)) => format!("{s:?}"),
        Some(Token::Word(w)) => format!("'{w}'"),
        Some(Token::Symbol(s)) => format!("'{s}'"),
    }
}

impl Expr {
    /// Parses `source`; the error says what was expected where.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parser = Parser { tokens: tokenize(source)?, at: 0 };
        let expr = parser.expression()?;
        match parser.peek() {
            None => Ok(expr),
            Some(token) => Err(format!("unexpected {} after a complete expression", describe(Some(token)))),
        }
    }

    /// The variables the expression reads, in first-use order.
    pub fn variables(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.collect_variables(&mut names);
        names
    }

    fn collect_variables(&self, names: &mut Vec<String>) {
        match self {
            Expr::Literal(_) => {}
            Expr::Variable(name) if !names.contains(name) => names.push(name.clone()),
            Expr::Variable(_) => {}
            Expr::Not(inner) | Expr::Negate(inner) => inner.collect_variables(names),
            Expr::Binary(left, _, right) => {
                left.collect_variables(names);
                right.collect_variables(names);
            }
            Expr::If(c, a, b) => [c, a, b].iter().for_each(|e| e.collect_variables(names)),
            Expr::Call(_, arguments) => arguments.iter().for_each(|e| e.collect_variables(names)),
        }
    }

    /// Evaluates with `lookup` giving each variable's value; type errors name the operation and values.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Option<Value>) -> Result<Value, String> {
        Ok(match self {
            Expr::Literal(value) => value.clone(),
            Expr::Variable(name) => lookup(name).ok_or_else(|| format!("variable '{name}' has no value"))?,
            Expr::Not(inner) => Value::Bool(!as_bool(&inner.eval(lookup)?, "not")?),
            Expr::Negate(inner) => Value::Int(-as_int(&inner.eval(lookup)?, "-")?),
            Expr::If(condition, yes, no) => match as_bool(&condition.eval(lookup)?, "if")? {
                true => yes.eval(lookup)?,
                false => no.eval(lookup)?,
            },
            Expr::Binary(left, op, right) => binary(*op, left.eval(lookup)?, right.eval(lookup)?)?,
            Expr::Call(name, arguments) => {
                let values = arguments.iter().map(|a| a.eval(lookup)).collect::<Result<Vec<_>, _>>()?;
                let ints = values.iter().map(|v| as_int(v, name)).collect::<Result<Vec<_>, _>>()?;
                Value::Int(match name.as_str() {
                    "min" => ints[0].min(ints[1]),
                    "max" => ints[0].max(ints[1]),
                    _ => ints[0].abs(),
                })
            }
        })
    }
}

fn as_bool(value: &Value, what: &str) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(format!("'{what}' needs a boolean, got {other}")),
    }
}

fn as_int(value: &Value, what: &str) -> Result<i64, String> {
    match value {
        Value::Int(i) => Ok(*i),
        other => Err(format!("'{what}' needs an integer, got {other}")),
    }
}

fn binary(op: Op, left: Value, right: Value) -> Result<Value, String> {
    let symbol = format!("{op:?}").to_lowercase();
    Ok(match op {
        Op::Eq => Value::Bool(left == right),
        Op::Ne => Value::Bool(left != right),
        Op::Or => Value::Bool(as_bool(&left, "or")? || as_bool(&right, "or")?),
        Op::And => Value::Bool(as_bool(&left, "and")? && as_bool(&right, "and")?),
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let (a, b) = (as_int(&left, &symbol)?, as_int(&right, &symbol)?);
            Value::Bool(match op {
                Op::Lt => a < b,
                Op::Le => a <= b,
                Op::Gt => a > b,
                _ => a >= b,
            })
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Rem => {
            let (a, b) = (as_int(&left, &symbol)?, as_int(&right, &symbol)?);
            if matches!(op, Op::Div | Op::Rem) && b == 0 {
                return Err(format!("{symbol} by zero ({a} and {b})"));
            }
            Value::Int(match op {
                Op::Add => a.wrapping_add(b),
                Op::Sub => a.wrapping_sub(b),
                Op::Mul => a.wrapping_mul(b),
                Op::Div => a.div_euclid(b),
                _ => a.rem_euclid(b),
            })
        }
    })
}
