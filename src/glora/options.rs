//! The options each GLoRA term can take, and their string forms.
//!
//! A layer's adapter has five terms, A to E (see [`Slot`]). A and B choose between a
//! low-rank product, a per-output vector, one scalar or nothing; C between a low-rank
//! product, a per-input vector or nothing; D and E between a per-output vector, a
//! scalar or nothing. The strings (`LoRA_4`, `vector`, `constant`, `none`) are the ones
//! the reference writes; they appear in config files, the supernet artifact and logs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One of the five terms of a GLoRA layer: `W' = W0 + W0⊙A + B`,
/// `b' = b0 + b0⊙D + E + W0·C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    A,
    B,
    C,
    D,
    E,
}

impl Slot {
    pub const ALL: [Slot; 5] = [Slot::A, Slot::B, Slot::C, Slot::D, Slot::E];

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
            Slot::C => "C",
            Slot::D => "D",
            Slot::E => "E",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Option of the weight terms A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbOption {
    /// `down[:, :r] · up[:r, :]`, a full `(d_out, d_in)` matrix of rank at most r.
    Lora(usize),
    /// The first column of the down factor, broadcast along the input dimension.
    Vector,
    /// Element `[0, 0]` of the down factor, broadcast everywhere.
    Constant,
    None,
}

/// Option of the prompt term C, a `d_in` vector folded into the bias as `W0·C`.
/// There is no `constant` option for C.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum COption {
    /// `Cd[:, :r] · Cu[:r, :]`, a `(d_in, 1)` column stored as two factors.
    Lora(usize),
    /// The first column of `Cd`.
    Vector,
    None,
}

/// Option of the bias terms D and E.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeOption {
    /// The whole `d_out` vector.
    Vector,
    /// Its first element, broadcast.
    Constant,
    None,
}

impl AbOption {
    /// The LoRA rank this option reads, if it is a LoRA option.
    pub fn rank(self) -> Option<usize> {
        match self {
            AbOption::Lora(r) => Some(r),
            _ => None,
        }
    }
}

impl COption {
    /// The LoRA rank this option reads, if it is a LoRA option.
    pub fn rank(self) -> Option<usize> {
        match self {
            COption::Lora(r) => Some(r),
            _ => None,
        }
    }
}

const LORA_PREFIX: &str = "LoRA_";
const AB_ALLOWED: &str = "LoRA_<r> with r >= 1, vector, constant, none";
const C_ALLOWED: &str = "LoRA_<r> with r >= 1, vector, none (C has no constant)";
const DE_ALLOWED: &str = "vector, constant, none";

/// A string that is not an option of the term it was given for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a GLoRA option here; allowed: {allowed}")]
pub struct OptionParseError {
    pub text: String,
    pub allowed: &'static str,
}

/// The rank in `LoRA_<r>`: decimal digits only, no sign, no leading zero, r >= 1,
/// the same strings the schema's pattern accepts.
fn parse_lora_rank(text: &str) -> Option<usize> {
    let digits = text.strip_prefix(LORA_PREFIX)?;
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !well_formed {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for AbOption {
    type Err = OptionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "vector" => Ok(AbOption::Vector),
            "constant" => Ok(AbOption::Constant),
            "none" => Ok(AbOption::None),
            _ => parse_lora_rank(text)
                .map(AbOption::Lora)
                .ok_or_else(|| OptionParseError {
                    text: text.to_string(),
                    allowed: AB_ALLOWED,
                }),
        }
    }
}

impl FromStr for COption {
    type Err = OptionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "vector" => Ok(COption::Vector),
            "none" => Ok(COption::None),
            _ => parse_lora_rank(text)
                .map(COption::Lora)
                .ok_or_else(|| OptionParseError {
                    text: text.to_string(),
                    allowed: C_ALLOWED,
                }),
        }
    }
}

impl FromStr for DeOption {
    type Err = OptionParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "vector" => Ok(DeOption::Vector),
            "constant" => Ok(DeOption::Constant),
            "none" => Ok(DeOption::None),
            _ => Err(OptionParseError {
                text: text.to_string(),
                allowed: DE_ALLOWED,
            }),
        }
    }
}

impl fmt::Display for AbOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbOption::Lora(r) => write!(f, "{LORA_PREFIX}{r}"),
            AbOption::Vector => f.write_str("vector"),
            AbOption::Constant => f.write_str("constant"),
            AbOption::None => f.write_str("none"),
        }
    }
}

impl fmt::Display for COption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            COption::Lora(r) => write!(f, "{LORA_PREFIX}{r}"),
            COption::Vector => f.write_str("vector"),
            COption::None => f.write_str("none"),
        }
    }
}

impl fmt::Display for DeOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeOption::Vector => f.write_str("vector"),
            DeOption::Constant => f.write_str("constant"),
            DeOption::None => f.write_str("none"),
        }
    }
}

/// Serialises an option as its string form and reads it back through `FromStr`.
macro_rules! serde_as_string {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_string!(AbOption);
serde_as_string!(COption);
serde_as_string!(DeOption);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ab_strings_round_trip() {
        for opt in [
            AbOption::Lora(1),
            AbOption::Lora(4),
            AbOption::Lora(16),
            AbOption::Vector,
            AbOption::Constant,
            AbOption::None,
        ] {
            assert_eq!(opt.to_string().parse::<AbOption>(), Ok(opt));
        }
        assert_eq!("LoRA_4".parse::<AbOption>(), Ok(AbOption::Lora(4)));
        assert_eq!(AbOption::Lora(12).to_string(), "LoRA_12");
    }

    #[test]
    fn c_and_de_strings_round_trip() {
        for opt in [COption::Lora(8), COption::Vector, COption::None] {
            assert_eq!(opt.to_string().parse::<COption>(), Ok(opt));
        }
        for opt in [DeOption::Vector, DeOption::Constant, DeOption::None] {
            assert_eq!(opt.to_string().parse::<DeOption>(), Ok(opt));
        }
        assert_eq!(COption::Lora(2).to_string(), "LoRA_2");
        assert_eq!(DeOption::Constant.to_string(), "constant");
    }

    #[test]
    fn malformed_lora_strings_are_rejected() {
        for bad in [
            "LoRA_", "LoRA_0", "LoRA_04", "LoRA_+4", "LoRA_-1", "LoRA_4x", "lora_4", "LoRA4",
            "LoRA_ 4", "",
        ] {
            assert!(bad.parse::<AbOption>().is_err(), "{bad:?} accepted as A/B");
            assert!(bad.parse::<COption>().is_err(), "{bad:?} accepted as C");
        }
    }

    #[test]
    fn errors_name_the_string_and_the_allowed_values() {
        let err = "constant".parse::<COption>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"constant\""), "{msg}");
        assert!(msg.contains("vector") && msg.contains("none") && msg.contains("LoRA_"));
        assert!(msg.contains("no constant"), "{msg}");

        let msg = "LoRA_4".parse::<DeOption>().unwrap_err().to_string();
        assert!(msg.contains("\"LoRA_4\"") && msg.contains("vector, constant, none"));

        let msg = "Vector".parse::<AbOption>().unwrap_err().to_string();
        assert!(
            msg.contains("\"Vector\"") && msg.contains("constant"),
            "{msg}"
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&AbOption::Lora(4)).unwrap();
        assert_eq!(json, "\"LoRA_4\"");
        let back: COption = serde_json::from_str("\"vector\"").unwrap();
        assert_eq!(back, COption::Vector);
        let err = serde_json::from_str::<DeOption>("\"sometimes\"").unwrap_err();
        assert!(err.to_string().contains("sometimes"));
    }

    #[test]
    fn ranks_are_reported_for_lora_only() {
        assert_eq!(AbOption::Lora(8).rank(), Some(8));
        assert_eq!(AbOption::Vector.rank(), None);
        assert_eq!(COption::Lora(2).rank(), Some(2));
        assert_eq!(COption::None.rank(), None);
    }
}
