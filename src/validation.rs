//! Field-level validation errors, reported as 422 `validation_failed`.

use serde::Serialize;
use utoipa::ToSchema;

/// One rule that one request field broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name as it appears in the request (`quantity`, `payment.token`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// Longest `limit` of a list page: the bound a list request is validated against, and the
/// clamp every paged read applies.
pub const PAGE_LIMIT_MAX: i64 = 100;

/// Most field errors a 422 lists; its `detail` says how many more there were, so a request
/// of thousands of bad fields cannot make a response of megabytes.
pub const ERRORS_LISTED_MAX: usize = 20;

/// Most characters of a field name a 422 repeats (an unknown query parameter's name is the
/// client's text); longer ones are cut and end in `…`.
pub const FIELD_NAME_LISTED_MAX: usize = 100;

/// The errors a 422 lists (at most [`ERRORS_LISTED_MAX`], field names cut to
/// [`FIELD_NAME_LISTED_MAX`] characters) and how many were left out.
pub fn listed(errors: &[FieldError]) -> (Vec<FieldError>, usize) {
    let shown = errors
        .iter()
        .take(ERRORS_LISTED_MAX)
        .map(|error| {
            let mut field: String = error.field.chars().take(FIELD_NAME_LISTED_MAX).collect();
            if field.len() < error.field.len() {
                field.push('…');
            }
            FieldError { field, message: error.message.clone() }
        })
        .collect();
    (shown, errors.len().saturating_sub(ERRORS_LISTED_MAX))
}

/// Collects field errors while a request is validated.
#[derive(Debug, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` broke a rule.
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError { field: field.to_owned(), message: message.into() });
    }

    /// Keeps `value` if it is `Ok`, records its error under `field` otherwise.
    pub fn check<T>(&mut self, field: &str, value: Result<T, String>) -> Option<T> {
        match value {
            Ok(value) => Some(value),
            Err(message) => {
                self.add(field, message);
                None
            }
        }
    }

    /// Requires a value to be present.
    pub fn require<T>(&mut self, field: &str, value: Option<T>) -> Option<T> {
        if value.is_none() {
            self.add(field, "is required");
        }
        value
    }

    /// `Ok(value)` when nothing was recorded, else every recorded error.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() { Ok(value()) } else { Err(self.0) }
    }

    /// Whether any rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many rules were broken so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The recorded errors.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// Checks that a name-like text has between `min` and `max` characters and no control
/// characters (Unicode `Cc`): Postgres cannot store NUL, and names are shown to people.
pub fn plain_text(text: &str, min: usize, max: usize) -> Result<String, String> {
    let length = text.chars().count();
    if length < min || length > max {
        return Err(format!("must be {min} to {max} characters long"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".to_owned());
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_errors_are_capped_and_field_names_cut() {
        let errors: Vec<FieldError> = (0..ERRORS_LISTED_MAX + 5)
            .map(|index| FieldError { field: format!("f{index}"), message: "unknown".to_owned() })
            .collect();
        let (shown, omitted) = listed(&errors);
        assert_eq!((shown.len(), omitted), (ERRORS_LISTED_MAX, 5));
        let long = [FieldError { field: "k".repeat(1000), message: "unknown".to_owned() }];
        let (shown, omitted) = listed(&long);
        assert_eq!((shown[0].field.chars().count(), omitted), (FIELD_NAME_LISTED_MAX + 1, 0));
    }

    #[test]
    fn plain_text_bounds_length_and_refuses_control_characters() {
        assert_eq!(plain_text("Main Arena", 1, 200), Ok("Main Arena".to_owned()));
        assert_eq!(plain_text("Ünïcödé ✓", 1, 9), Ok("Ünïcödé ✓".to_owned()), "length counts characters");
        assert!(plain_text("", 1, 200).is_err());
        assert!(plain_text("abc", 1, 2).is_err());
        for bad in ["NUL\u{0}", "bell\u{7}", "new\nline", "tab\t", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(plain_text(bad, 1, 200), Err("must not contain control characters".to_owned()), "{bad:?}");
        }
    }
}
