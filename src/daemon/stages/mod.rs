//! The daemon's stages, one file each (see the module docs of [`crate::daemon`] for how they are
//! joined): [`router`] -> [`ingest`] (the store's single writer), [`requests`], [`commands`];
//! beside them [`refresh`] (popularity), [`stats`] and [`status`] (status.json, systemd). [`reply`]
//! is how any stage answers a kiosk.

pub(crate) mod commands;
pub(crate) mod ingest;
pub(crate) mod refresh;
pub(crate) mod reply;
pub(crate) mod requests;
pub(crate) mod router;
pub(crate) mod stats;
pub(crate) mod status;
