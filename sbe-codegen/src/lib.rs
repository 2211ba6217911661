//! A FIX Simple Binary Encoding (SBE 1.0) code generator for Rust.
//!
//! Reads an SBE XML schema (XInclude resolved relative to the schema file) and writes Rust
//! source with a zero-copy decoder and an encoder per message. It runs in stages, each in its
//! own module:
//!
//! 1. [`parse`]: XML -> syntax tree, with the file and line of every element;
//! 2. [`resolve`]: names bound, offsets and sizes computed, the schema checked ([`model`]);
//! 3. [`emit`]: model -> Rust source that depends only on the `sbe_runtime` crate.
//!
//! A broken schema is an [`Error`] naming the file, line and element; from `build.rs` that
//! fails the build with that message. The generated code is documented in [`emit`].
//!
//! ```no_run
//! // build.rs
//! let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
//! sbe_codegen::build("schemas/example.xml", out.join("example.rs"));
//! ```

mod emit;
mod error;
pub mod model;
pub mod names;
mod parse;
mod resolve;
mod syntax;

use std::path::{Path, PathBuf};

pub use error::{Error, Location, Result};

/// Generated code and the files it came from.
#[derive(Debug)]
pub struct Generated {
    /// The resolved schema.
    pub schema: model::Schema,
    /// Rust source, to be `include!`d inside a module.
    pub code: String,
    /// Every file read: the schema and what it includes.
    pub inputs: Vec<PathBuf>,
}

/// Reads and checks the schema at `path` without generating code.
pub fn load(path: impl AsRef<Path>) -> Result<(model::Schema, Vec<PathBuf>)> {
    let (syntax, inputs) = parse::parse_file(path.as_ref())?;
    Ok((resolve::resolve(&syntax)?, inputs))
}

/// Generates the code for the schema at `path`.
pub fn generate(path: impl AsRef<Path>) -> Result<Generated> {
    let (schema, inputs) = load(path)?;
    let code = emit::emit(&schema);
    Ok(Generated {
        schema,
        code,
        inputs,
    })
}

/// Generates the code for schema text `xml`, as if read from `path` (which anchors includes and
/// names the file in errors).
pub fn generate_str(path: impl AsRef<Path>, xml: &str) -> Result<Generated> {
    let (syntax, inputs) = parse::parse_str(path.as_ref(), xml)?;
    let schema = resolve::resolve(&syntax)?;
    let code = emit::emit(&schema);
    Ok(Generated {
        schema,
        code,
        inputs,
    })
}

/// Generates the code for the schema at `path`, keeping only the messages named in `messages`
/// (every type stays: types are cheap, messages are what a large schema's code is made of).
/// The whole schema is still read and checked. A name that is no message of the schema is an
/// error, so a renamed message fails the build rather than vanishing from it.
pub fn generate_messages(path: impl AsRef<Path>, messages: &[&str]) -> Result<Generated> {
    let path = path.as_ref();
    let (mut schema, inputs) = load(path)?;
    if let Some(unknown) = messages
        .iter()
        .find(|name| !schema.messages.iter().any(|m| m.name == **name))
    {
        let location = Location {
            file: path.to_path_buf(),
            line: 1,
        };
        return Err(Error::schema(
            &location,
            "messageSchema",
            format!("no message named '{unknown}' to generate"),
        ));
    }
    schema
        .messages
        .retain(|m| messages.contains(&m.name.as_str()));
    let code = emit::emit(&schema);
    Ok(Generated {
        schema,
        code,
        inputs,
    })
}

/// For `build.rs`: generates the code for `schema` into `out`, prints
/// `cargo:rerun-if-changed` for every input, and on a schema error prints it and exits the
/// build script with a failure, so the build stops with the message.
pub fn build(schema: impl AsRef<Path>, out: impl AsRef<Path>) {
    let schema = schema.as_ref();
    println!("cargo:rerun-if-changed={}", schema.display());
    write_out(generate(schema), out.as_ref());
}

/// [`build`] for only the messages named in `messages` (see [`generate_messages`]).
pub fn build_messages(schema: impl AsRef<Path>, out: impl AsRef<Path>, messages: &[&str]) {
    let schema = schema.as_ref();
    println!("cargo:rerun-if-changed={}", schema.display());
    write_out(generate_messages(schema, messages), out.as_ref());
}

/// The rest of [`build`]: reports a schema error and exits, or writes the code if it changed.
fn write_out(generated: Result<Generated>, out: &Path) {
    let generated = match generated {
        Ok(generated) => generated,
        Err(e) => {
            eprintln!("error: SBE schema: {e}");
            println!("cargo:warning=SBE schema: {e}");
            std::process::exit(1);
        }
    };
    for input in &generated.inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    for warning in &generated.schema.warnings {
        println!("cargo:warning=SBE schema: {warning}");
    }
    let unchanged = std::fs::read_to_string(out).is_ok_and(|old| old == generated.code);
    if !unchanged && let Err(e) = std::fs::write(out, &generated.code) {
        eprintln!("error: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
