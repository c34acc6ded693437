//! Options spelled as text — `cosine`, `pair:4,9,100`, `effective:0.9999` — as the command
//! line takes them and `config.json` records them.
//!
//! Every typed option implements `FromStr` and `Display` as inverses of each other, and is
//! serialised as that text, so a saved configuration reads like the command that made it.
//! The library itself never parses option strings while it runs: the binary parses them
//! once, at the door, and the reader of a saved run parses its `config.json`.

use std::fmt;

/// Text that does not spell a value of the expected option type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The text as given.
    pub input: String,
    /// What was expected instead.
    pub reason: String,
}

impl ParseError {
    /// `input` is not valid: `reason`.
    pub fn new(input: &str, reason: impl Into<String>) -> Self {
        ParseError {
            input: input.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// Serialises the listed types as their `Display` text and deserialises them with `FromStr`.
macro_rules! serde_as_text {
    ($($t:ty),+ $(,)?) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    )+};
}
pub(crate) use serde_as_text;

/// Serde for `Option<f64>` that keeps every value: finite numbers as JSON numbers, and
/// `inf`, `-inf` and `NaN` as those strings (JSON has no literal for them, and serde_json
/// would write `null`, which reads back as "not given"). Use with
/// `#[serde(default, with = "crate::text::option_f64")]`.
pub mod option_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `value` as a number, a non-finite string, or `null` for `None`.
    pub fn serialize<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(v) if v.is_finite() => s.serialize_some(v),
            Some(v) => s.serialize_some(&v.to_string()),
        }
    }

    /// Reads what [`serialize`] writes (and any number or `null`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum NumberOrText {
            Number(f64),
            Text(String),
        }
        match Option::<NumberOrText>::deserialize(d)? {
            None => Ok(None),
            Some(NumberOrText::Number(v)) => Ok(Some(v)),
            Some(NumberOrText::Text(t)) => match t.as_str() {
                "inf" => Ok(Some(f64::INFINITY)),
                "-inf" => Ok(Some(f64::NEG_INFINITY)),
                "NaN" => Ok(Some(f64::NAN)),
                _ => Err(serde::de::Error::custom(format!(
                    "{t:?}: expected a number, \"inf\", \"-inf\" or \"NaN\""
                ))),
            },
        }
    }
}

/// An enum of keywords (`sgd`, `adam`, …): the enum, `ALL`, `FromStr`, `Display`, serde.
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The keyword, as the command line spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Every keyword for a help text: `a, b or c`.
            pub fn keywords() -> String {
                $crate::text::one_of(Self::ALL.iter().map(|v| v.as_str()))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text::ParseError;
            fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                    $crate::text::ParseError::new(s, format!("expected one of {}", names.join(", ")))
                })
            }
        }

        $crate::text::serde_as_text!($name);
    };
}
pub(crate) use keyword_enum;

/// `a, b or c` (`a` alone, `a or b`): the choices of an option, for help texts.
pub fn one_of<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    let words: Vec<&str> = words.into_iter().collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_of_lists_choices_as_a_sentence() {
        assert_eq!(super::one_of([]), "");
        assert_eq!(super::one_of(["a"]), "a");
        assert_eq!(super::one_of(["a", "b"]), "a or b");
        assert_eq!(super::one_of(["a", "b", "c"]), "a, b or c");
    }

    keyword_enum! {
        /// A test enum.
        pub enum Colour {
            /// Red.
            Red = "red",
            /// Dark blue.
            DarkBlue = "dark-blue",
        }
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct Optional {
        #[serde(default, with = "super::option_f64")]
        x: Option<f64>,
    }

    #[test]
    fn optional_floats_keep_non_finite_values_through_json() {
        for x in [
            None,
            Some(0.5),
            Some(-3.0),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
        ] {
            let json = serde_json::to_string(&Optional { x }).unwrap();
            assert_eq!(
                serde_json::from_str::<Optional>(&json).unwrap().x,
                x,
                "{json}"
            );
        }
        let json = serde_json::to_string(&Optional { x: Some(f64::NAN) }).unwrap();
        assert_eq!(json, r#"{"x":"NaN"}"#);
        assert!(serde_json::from_str::<Optional>(&json)
            .unwrap()
            .x
            .unwrap()
            .is_nan());
        assert_eq!(
            serde_json::to_string(&Optional {
                x: Some(f64::INFINITY)
            })
            .unwrap(),
            r#"{"x":"inf"}"#
        );
        assert!(serde_json::from_str::<Optional>("{}").unwrap().x.is_none());
        assert!(serde_json::from_str::<Optional>(r#"{"x":"lots"}"#).is_err());
    }

    #[test]
    fn keywords_round_trip_as_text_and_json() {
        for &c in Colour::ALL {
            assert_eq!(c.to_string().parse::<Colour>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Colour>(&json).unwrap(), c);
        }
        let e = "blue".parse::<Colour>().unwrap_err();
        assert_eq!(e.to_string(), "\"blue\": expected one of red, dark-blue");
        assert!(serde_json::from_str::<Colour>("\"green\"").is_err());
        assert_eq!(Colour::keywords(), "red or dark-blue");
    }
}
