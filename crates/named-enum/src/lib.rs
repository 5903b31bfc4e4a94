//! named-enum: names of algorithm switches, as written in configs and on the command line.
//!
//! Its own crate so that every library crate, with or without the model runtime (data-select
//! stays free of burn), spells its switches with the same macro; `lm_core::named_enum!` and
//! `data_select::named_enum!` re-export it.
//!
//! [`named_enum!`](crate::named_enum) gives a fieldless enum one spelling per variant, used by
//! its [`Display`](std::fmt::Display) and [`FromStr`](std::str::FromStr) implementations and
//! listed in `NAMES`, so the library, its reports and the `openexpert` command line agree on the
//! words. Parsing ignores ASCII case; an unknown word is an [`UnknownName`] that lists the
//! accepted ones.

/// A word that names none of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?}; expected one of: {}", expected.join(", "))]
pub struct UnknownName {
    /// What was being parsed (`similarity mode`, `combine method`, ...).
    pub what: &'static str,
    /// The rejected word.
    pub found: String,
    /// The accepted words.
    pub expected: &'static [&'static str],
}

/// Implements `NAMES`, `name()`, [`Display`](std::fmt::Display) and
/// [`FromStr`](std::str::FromStr) (error: [`UnknownName`]) for a fieldless enum:
///
/// ```
/// #[derive(Debug, Clone, Copy, PartialEq)]
/// enum Mode { Fast, VerySlow }
/// named_enum::named_enum!(Mode, "mode", { Fast => "fast", VerySlow => "very-slow" });
///
/// assert_eq!("very-slow".parse::<Mode>().unwrap(), Mode::VerySlow);
/// assert_eq!(Mode::Fast.to_string(), "fast");
/// let err = "slow".parse::<Mode>().unwrap_err().to_string();
/// assert_eq!(err, "unknown mode \"slow\"; expected one of: fast, very-slow");
/// ```
#[macro_export]
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every accepted name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// This value's name (as parsed and displayed).
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name,)+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::UnknownName;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                $(
                    if s.eq_ignore_ascii_case($name) {
                        return Ok($ty::$variant);
                    }
                )+
                Err($crate::UnknownName {
                    what: $what,
                    found: s.to_string(),
                    expected: Self::NAMES,
                })
            }
        }
    };
}
