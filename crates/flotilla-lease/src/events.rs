//! Lease events as logs and metrics.

use flotilla_proto::lease::LeaseEvent;

use crate::backend::{LeaseName, OwnerId};

/// Logs one event in words an operator understands and counts it.
pub(crate) fn report(
    backend: &'static str,
    lease: &LeaseName,
    owner: &OwnerId,
    event: &LeaseEvent,
) {
    let lease_label = lease.as_str().to_owned();
    match event {
        LeaseEvent::Acquired { token, took } => {
            tracing::info!(backend, %lease, %owner, token = token.0, ?took, "lease {lease} acquired by {owner} (fencing token {token}) in {took:?}");
            metrics::counter!("flotilla_lease_acquired_total", "backend" => backend, "lease" => lease_label).increment(1);
            metrics::histogram!("flotilla_lease_acquire_seconds", "backend" => backend)
                .record(took.as_secs_f64());
        }
        LeaseEvent::Renewed { took } => {
            tracing::debug!(backend, %lease, ?took, "lease {lease} renewed in {took:?}");
            metrics::counter!("flotilla_lease_renewed_total", "backend" => backend).increment(1);
            metrics::histogram!("flotilla_lease_renew_seconds", "backend" => backend)
                .record(took.as_secs_f64());
        }
        LeaseEvent::RenewalRetried {
            attempt,
            reason,
            remaining,
        } => {
            tracing::warn!(backend, %lease, attempt, %reason, ?remaining, "renewal {attempt} of lease {lease} failed ({reason}); retrying, the lease is still safely held for {remaining:?}");
            metrics::counter!("flotilla_lease_renewal_retried_total", "backend" => backend)
                .increment(1);
        }
        LeaseEvent::Lost { cause } => {
            tracing::error!(backend, %lease, %owner, %cause, "lease {lease} lost by {owner}: {cause}");
            let kind = match cause {
                flotilla_proto::lease::LostCause::Expired { .. } => "expired",
                flotilla_proto::lease::LostCause::TakenOver { .. } => "taken-over",
            };
            metrics::counter!("flotilla_lease_lost_total", "backend" => backend, "lease" => lease_label, "cause" => kind).increment(1);
        }
        LeaseEvent::Released { took } => {
            tracing::info!(backend, %lease, %owner, ?took, "lease {lease} released by {owner} in {took:?}");
            metrics::counter!("flotilla_lease_released_total", "backend" => backend).increment(1);
            metrics::histogram!("flotilla_lease_release_seconds", "backend" => backend)
                .record(took.as_secs_f64());
        }
        LeaseEvent::ReleaseFailed { reason } => {
            tracing::warn!(backend, %lease, %owner, %reason, "release of lease {lease} by {owner} gave up ({reason}); it expires by its TTL at worst");
            metrics::counter!("flotilla_lease_release_failed_total", "backend" => backend)
                .increment(1);
        }
    }
}
