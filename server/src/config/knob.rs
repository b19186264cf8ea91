//! How one variable is read ([`Spec`]: its default and the values it
//! accepts) and how a value is shown in the start-up summary ([`Show`]).
//! The table in `config.rs` names a spec per variable; nothing here knows a
//! variable by name.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{invalid, ConfigError};

/// Reads one variable's value (`None`: unset or blank) into its type.
pub trait Spec {
    /// The type of the variable in [`super::Config`].
    type Out;
    /// The value, or an error naming `name` and what is wrong.
    fn read(self, name: &'static str, raw: Option<String>) -> Result<Self::Out, ConfigError>;
}

/// A check beyond parsing: `Err` says what is wrong with the value.
type Rule<T> = fn(&T) -> Result<(), String>;

/// A check of a text value: `Err` says what is wrong with it.
type TextRule = fn(&str) -> Result<(), String>;

/// The bounds a parsed value must be within.
pub struct Bounds<T> {
    min: Option<T>,
    rule: Option<Rule<T>>,
}

impl<T> Bounds<T> {
    const NONE: Bounds<T> = Bounds { min: None, rule: None };
}

/// The builder steps of the specs whose values have [`Bounds`].
pub trait Bounded<T>: Sized {
    /// The spec's bounds.
    fn bounds(&mut self) -> &mut Bounds<T>;

    /// Values below `min` are refused ("… is below the minimum …").
    fn min(mut self, min: T) -> Self {
        self.bounds().min = Some(min);
        self
    }

    /// Values `rule` refuses are refused with its reason.
    fn rule(mut self, rule: Rule<T>) -> Self {
        self.bounds().rule = Some(rule);
        self
    }
}

impl<T: PartialOrd + fmt::Display> Bounds<T> {
    fn check(&self, name: &'static str, value: T) -> Result<T, ConfigError> {
        if let Some(min) = &self.min {
            if value < *min {
                return Err(invalid(name, &format!("{value} is below the minimum {min}")));
            }
        }
        if let Some(rule) = self.rule {
            rule(&value).map_err(|reason| invalid(name, &reason))?;
        }
        Ok(value)
    }
}

fn parse<T: FromStr>(name: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    raw.parse().map_err(|e: T::Err| invalid(name, &format!("{raw:?}: {e}")))
}

/// A value parsed with `FromStr`, `default` when unset.
pub struct Value<T> {
    default: T,
    bounds: Bounds<T>,
}

/// A value parsed with `FromStr`, `default` when unset.
pub fn value<T>(default: T) -> Value<T> {
    Value { default, bounds: Bounds::NONE }
}

impl<T> Bounded<T> for Value<T> {
    fn bounds(&mut self) -> &mut Bounds<T> {
        &mut self.bounds
    }
}

impl<T: FromStr + PartialOrd + fmt::Display> Spec for Value<T>
where
    T::Err: fmt::Display,
{
    type Out = T;
    fn read(self, name: &'static str, raw: Option<String>) -> Result<T, ConfigError> {
        match raw {
            None => Ok(self.default),
            Some(raw) => self.bounds.check(name, parse(name, &raw)?),
        }
    }
}

/// A value parsed with `FromStr`, `None` when unset.
pub struct Optional<T> {
    bounds: Bounds<T>,
}

/// A value parsed with `FromStr`, `None` when unset.
pub fn optional<T>() -> Optional<T> {
    Optional { bounds: Bounds::NONE }
}

impl<T> Bounded<T> for Optional<T> {
    fn bounds(&mut self) -> &mut Bounds<T> {
        &mut self.bounds
    }
}

impl<T: FromStr + PartialOrd + fmt::Display> Spec for Optional<T>
where
    T::Err: fmt::Display,
{
    type Out = Option<T>;
    fn read(self, name: &'static str, raw: Option<String>) -> Result<Option<T>, ConfigError> {
        raw.map(|raw| self.bounds.check(name, parse(name, &raw)?)).transpose()
    }
}

/// Whole seconds, `default` when unset.
pub struct Secs {
    default: u64,
    range: Option<(u64, u64)>,
}

/// Whole seconds, `default` when unset.
pub fn secs(default: u64) -> Secs {
    Secs { default, range: None }
}

impl Secs {
    /// Values outside `min..=max` are refused ("must be between … seconds").
    pub fn within(mut self, min: u64, max: u64) -> Self {
        self.range = Some((min, max));
        self
    }
}

impl Spec for Secs {
    type Out = Duration;
    fn read(self, name: &'static str, raw: Option<String>) -> Result<Duration, ConfigError> {
        let n = match raw {
            None => self.default,
            Some(raw) => parse(name, &raw)?,
        };
        match self.range {
            Some((min, max)) if !(min..=max).contains(&n) => {
                Err(invalid(name, &format!("must be between {min} and {max} seconds")))
            }
            _ => Ok(Duration::from_secs(n)),
        }
    }
}

/// A switch: 1/true/yes/on or 0/false/no/off, `default` when unset.
pub struct Flag(bool);

/// A switch: 1/true/yes/on or 0/false/no/off, `default` when unset.
pub fn flag(default: bool) -> Flag {
    Flag(default)
}

impl Spec for Flag {
    type Out = bool;
    fn read(self, name: &'static str, raw: Option<String>) -> Result<bool, ConfigError> {
        match raw.as_deref() {
            None => Ok(self.0),
            Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
            Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
            Some(v) => Err(invalid(name, &format!("{v:?}: expected 1 or 0"))),
        }
    }
}

/// Text as given, `None` when unset.
pub struct Text {
    rule: Option<TextRule>,
}

/// Text as given, `None` when unset.
pub fn text() -> Text {
    Text { rule: None }
}

impl Text {
    /// Values `rule` refuses are refused with its reason.
    pub fn rule(mut self, rule: TextRule) -> Self {
        self.rule = Some(rule);
        self
    }
}

impl Spec for Text {
    type Out = Option<String>;
    fn read(self, name: &'static str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
        if let (Some(rule), Some(v)) = (self.rule, &raw) {
            rule(v).map_err(|reason| invalid(name, &reason))?;
        }
        Ok(raw)
    }
}

/// Text as given, `default()` when unset.
pub struct TextOr(fn() -> String);

/// Text as given, `default()` when unset.
pub fn text_or(default: fn() -> String) -> TextOr {
    TextOr(default)
}

impl Spec for TextOr {
    type Out = String;
    fn read(self, _: &'static str, raw: Option<String>) -> Result<String, ConfigError> {
        Ok(raw.unwrap_or_else(self.0))
    }
}

/// A comma-separated list (blank items dropped), empty when unset.
pub struct List;

/// A comma-separated list (blank items dropped), empty when unset.
pub fn list() -> List {
    List
}

impl Spec for List {
    type Out = Vec<String>;
    fn read(self, _: &'static str, raw: Option<String>) -> Result<Vec<String>, ConfigError> {
        Ok(raw
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default())
    }
}

/// Refuses a number that is not positive and finite.
pub fn positive(r: &f64) -> Result<(), String> {
    if *r > 0.0 && r.is_finite() {
        Ok(())
    } else {
        Err("must be a positive number".to_string())
    }
}

/// A value as the start-up summary shows it.
pub trait Show {
    /// The text after `field=`.
    fn show(&self) -> String;
}

macro_rules! show_display {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_display!(u16, u32, usize, u64, f64, bool, String, std::net::IpAddr, log::LevelFilter);

impl Show for Duration {
    fn show(&self) -> String {
        format!("{}s", self.as_secs())
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        self.as_ref().map_or("off".to_string(), Show::show)
    }
}

impl Show for Vec<String> {
    fn show(&self) -> String {
        if self.is_empty() {
            "any".to_string()
        } else {
            self.join(",")
        }
    }
}
