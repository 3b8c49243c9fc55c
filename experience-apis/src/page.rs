//! The query of every paginated list: `page_size` and `page_token`, nothing
//! else. Lists answer `next_page_token` until the last page.

use platform::problem::FieldError;

use crate::error::Error;

/// Largest `page_size` a caller may ask for; the process APIs cap theirs
/// at the same number.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Longest `page_token` accepted; real tokens are far shorter.
const MAX_PAGE_TOKEN_LEN: usize = 512;

/// Validated query of a list call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageQuery {
    /// Requested page size; `None` takes the server default.
    pub page_size: Option<u32>,
    /// Token of the page to read.
    pub page_token: Option<String>,
}

impl PageQuery {
    /// Parses `page_size` and `page_token`; anything else, a repeated
    /// parameter or a bad value is a 400 naming the parameter.
    pub fn parse(raw: Option<&str>) -> Result<Self, Error> {
        Self::parse_with(raw, |_, _| None)
    }

    /// [`PageQuery::parse`] for a list that takes filters too: `filter` is
    /// handed every other parameter and answers `None` for one it does not
    /// know, else whether its value is good. Every bad parameter, the
    /// page's and the filters', is named in one 400.
    pub fn parse_with(
        raw: Option<&str>,
        mut filter: impl FnMut(&str, &str) -> Option<Result<(), String>>,
    ) -> Result<Self, Error> {
        let mut query = PageQuery::default();
        let mut errors = Vec::new();
        let mut seen = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if seen.contains(&key) {
                errors.push(FieldError { field: key.to_string(), message: "given more than once".into() });
                continue;
            }
            seen.push(key.clone());
            match key.as_ref() {
                "page_size" => match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => query.page_size = Some(n),
                    _ => errors.push(FieldError {
                        field: "page_size".into(),
                        message: format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                    }),
                },
                "page_token" if value.len() > MAX_PAGE_TOKEN_LEN => {
                    errors.push(FieldError { field: "page_token".into(), message: "too long".into() })
                }
                "page_token" => query.page_token = Some(value.into_owned()),
                other => match filter(other, &value) {
                    Some(Ok(())) => {}
                    Some(Err(message)) => errors.push(FieldError { field: other.to_owned(), message }),
                    None => {
                        errors.push(FieldError { field: other.to_owned(), message: "unknown query parameter".into() })
                    }
                },
            }
        }
        if errors.is_empty() { Ok(query) } else { Err(Error::Invalid(errors)) }
    }

    /// `page_size` as the process APIs take it: 0 for their default.
    pub fn page_size(&self) -> i32 {
        self.page_size.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn parses_known_parameters() {
        let q = PageQuery::parse(Some("page_size=5&page_token=abc")).expect("valid");
        assert_eq!(q, PageQuery { page_size: Some(5), page_token: Some("abc".into()) });
        assert_eq!(q.page_size(), 5);
        assert_eq!(PageQuery::parse(None).expect("empty"), PageQuery::default());
        assert_eq!(PageQuery::default().page_size(), 0);
    }

    #[test]
    fn rejects_bad_values_unknown_and_repeated_parameters() {
        assert_eq!(fields(PageQuery::parse(Some("page_size=0")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(PageQuery::parse(Some("page_size=abc")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(PageQuery::parse(Some("page_size=101")).expect_err("invalid")), ["page_size"]);
        assert_eq!(fields(PageQuery::parse(Some("sort=name")).expect_err("invalid")), ["sort"]);
        assert_eq!(fields(PageQuery::parse(Some("page_size=1&page_size=2")).expect_err("invalid")), ["page_size"]);
        let long = format!("page_token={}", "t".repeat(513));
        assert_eq!(fields(PageQuery::parse(Some(&long)).expect_err("invalid")), ["page_token"]);
    }
}
