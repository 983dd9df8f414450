//! A failpoint for crash tests, compiled only with the `failpoints` feature
//! (which only the test builds turn on; the release binary has none).
//!
//! `PARLEY_FAILPOINT_BEFORE_COMMIT=<projection>` (or `*`) parks a projector for
//! good after it has written a batch's rows and before it commits them, so a
//! test can SIGKILL the process exactly inside a read-model transaction: the
//! case the crash tests exist for, which a kill at a random moment rarely hits.

/// Parks the task forever when the failpoint names `projection` and the batch
/// holds events the model reads (so it wrote model rows); otherwise returns
/// at once.
#[cfg(feature = "failpoints")]
pub(crate) async fn before_commit(
    projection: &dyn crate::Projection,
    batch: &[parley_event_log::EventEnvelope],
) {
    let Ok(target) = std::env::var("PARLEY_FAILPOINT_BEFORE_COMMIT") else {
        return;
    };
    if target != "*" && target != projection.name() {
        return;
    }
    let read = batch
        .iter()
        .filter(|e| projection.consumes(&e.aggregate_type))
        .count();
    if read == 0 {
        return;
    }
    tracing::warn!(
        projection = projection.name(),
        read,
        "failpoint: parked after writing a batch, before its commit"
    );
    std::future::pending::<()>().await;
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) async fn before_commit(
    _projection: &dyn crate::Projection,
    _batch: &[parley_event_log::EventEnvelope],
) {
}
