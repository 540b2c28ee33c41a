//! Remote control (pidbox): receive broadcast commands, send replies (spec §6).
