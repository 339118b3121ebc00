//! Schedules: cron-style recurring jobs per tenant and for the system. (the store and the fire logic arrive next)
pub mod timing;
