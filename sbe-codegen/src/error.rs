//! Schema errors: each names the file, the line and the element it is about, so a broken schema
//! fails the build with a message that points at the fix.

use std::fmt;
use std::path::PathBuf;

/// Where in which schema file an element stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The schema or included file.
    pub file: PathBuf,
    /// 1-based line of the element's start tag.
    pub line: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why a schema could not be turned into code.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not well-formed XML.
    Xml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The schema is well-formed XML but not a valid SBE schema.
    Schema {
        /// The element at fault.
        location: Location,
        /// The element, described: `message 'Car' field 'code'`.
        element: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn schema(
        location: &Location,
        element: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Schema {
            location: location.clone(),
            element: element.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Xml { path, message } => write!(f, "{}: invalid XML: {message}", path.display()),
            Error::Schema {
                location,
                element,
                message,
            } => write!(f, "{location}: {element}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The result type of every stage of the generator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
