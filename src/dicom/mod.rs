//! The DICOM vocabulary both directions of the data path share: UIDs, DIMSE command sets and
//! statuses, the SOP classes and transfer syntaxes simgate handles, and the Part-10 layout of
//! the files it stores. No I/O and no networking here.

pub mod dataset;
pub mod dimse;
pub mod part10;
pub mod sop_classes;
mod storage_classes;
pub mod transfer_syntax;
pub mod uid;

use serde::Serialize;

/// One item of a code sequence (PS3.3 8.8), e.g. a Procedure Code Sequence item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeItem {
    pub code_value: String,
    pub coding_scheme_designator: String,
    pub code_meaning: String,
}
