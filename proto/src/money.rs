//! Money as every contract carries it: a decimal string in the currency's
//! major unit with two places, never a float. One rounding rule for the
//! whole product — half away from zero, to two places, as invoices round —
//! so an order line, the ERP's total and the payment agree to the cent
//! whichever tier computed them.

use rust_decimal::{Decimal, RoundingStrategy};

/// Places every amount has on the wire.
pub const PLACES: u32 = 2;

/// `amount` rounded by the rule: two places, halves away from zero.
pub fn round(amount: Decimal) -> Decimal {
    let mut rounded = amount.round_dp_with_strategy(PLACES, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(PLACES);
    rounded
}

/// `amount` as the contracts write it, e.g. `"12.50"`.
pub fn format(amount: Decimal) -> String {
    round(amount).to_string()
}

/// A decimal string from a contract; an error names what was wrong
/// instead of turning into zero.
pub fn parse(text: &str) -> Result<Decimal, ParseError> {
    text.trim().parse().map_err(|_| ParseError(text.chars().take(40).collect()))
}

/// A string that is not a decimal amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not a decimal amount", self.0)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_round_away_from_zero_to_two_places() {
        let d = |s: &str| s.parse::<Decimal>().expect("decimal");
        assert_eq!(format(d("37.5")), "37.50");
        assert_eq!(format(d("12.345")), "12.35");
        // Banker's rounding would give 0.12 and -0.12.
        assert_eq!(format(d("0.125")), "0.13");
        assert_eq!(format(d("-0.125")), "-0.13");
        assert_eq!(format(d("0.124")), "0.12");
        assert_eq!(format(Decimal::from(3)), "3.00");
        assert_eq!(parse(" 12.50 "), Ok(d("12.50")));
        assert!(parse("12,50").is_err() && parse("").is_err());
    }
}
