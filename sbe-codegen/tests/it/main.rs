//! Integration tests for `sbe-codegen`, built as one binary: broken schemas and the errors they
//! must produce, XInclude resolution, and a snapshot of the generated code for a small fixture
//! schema.

mod broken;
mod select;
mod snapshot;
