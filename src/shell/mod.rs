//! kubectl in the browser (issue 23), built in steps. So far: the rules a typed command line
//! must pass before it runs (`line`) and the confinement of the child that runs it (`confine`).

pub mod confine;
pub mod line;
