//! Model names and versions as path components: a repository reference joins them onto a root,
//! so each must be a single directory name that cannot climb out of the repository.

use std::path::{Component, Path};

use super::RegistryError;

pub(crate) fn check_component(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let invalid = |reason| RegistryError::InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut components = Path::new(value).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !value.contains(['/', '\\']) => Ok(()),
        _ => Err(invalid(
            "it must be a single directory name, without '/' or '..'",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert!(check_component("name", "fraud-detection").is_ok());
        assert!(check_component("version", "7").is_ok());
    }

    #[test]
    fn references_cannot_escape_the_repository() {
        for value in ["..", "a/b", "../1", "", "/etc", "."] {
            let err = check_component("version", value).unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidName { .. }),
                "{value}: {err}"
            );
        }
    }
}
