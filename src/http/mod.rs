//! Incoming HTTP (tide). Handlers only decode, validate and hand the request to the runtime
//! through the node's [`Handle`]; they never touch node state. Client endpoints (`/jobs`,
//! `/status`) are open; everything under `/internal/` and `/admin/` passes one guard, the
//! single place where the cluster key is checked (the web view's fault relay under
//! `/cluster/faults/` passes it too). Every request but the admin API and its relay passes the
//! node's [`Gate`](crate::transport::Gate) first, so that a partition or stall ordered by `facto chaos`
//! cuts the node off while the campaign can still heal it.

mod admin;
mod answers;
mod client_api;
mod connections;
mod digits;
mod fault_relay;
mod forwards;
mod guards;
mod internal;
mod request_head;
mod respond;
mod serve;
mod slots;
mod view;
mod watches;

pub use client_api::STATUS_JOBS_DEFAULT;
pub use serve::serve;

use crate::node::Handle;
use admin::{crash, heal, partition, stall};
use client_api::{get_job, list_jobs, metrics, status, submit};
use guards::{
    CertificateGuard, ClientLimit, CountRequests, EchoRequestId, GateGuard, KeyGuard, ProtocolGuard, SettingsGuard,
};
use internal::{decimal, election, read_checkpoint, read_root, work, write_checkpoint};

type App = tide::Server<Handle>;

/// The node's HTTP application. Over `tls`, certificates decide who may call what: the
/// internal routes need a member's, the admin routes an admin client's.
pub fn app(handle: Handle, cluster_key: Option<String>, tls: bool) -> App {
    let mut app = tide::with_state(handle.clone());
    app.with(EchoRequestId);
    app.with(CountRequests);
    app.with(GateGuard);
    app.with(ProtocolGuard);
    app.at("/status").get(status);
    app.at("/metrics").get(metrics);
    app.at("/trace").get(client_api::trace);
    app.at("/").get(view::page);
    app.at("/view.js").get(view::script);
    app.at("/view.css").get(view::style);
    app.at("/cluster").get(view::cluster);
    app.at("/cluster/trace").get(view::cluster_trace);
    app.at("/diagram.js").get(view::diagram);
    app.at("/cluster/faults").nest(fault_relay::routes(handle.clone(), cluster_key.clone(), tls));
    let limit = ClientLimit::default();
    app.at("/jobs").with(limit.clone()).post(submit).get(list_jobs);
    app.at("/jobs/:id").with(limit.clone()).get(get_job);
    app.at("/jobs/:id/digits").with(limit).get(digits::get_digits);

    let mut admin = tide::with_state(handle.clone());
    if tls {
        admin.with(CertificateGuard::Admin);
    } else {
        admin.with(KeyGuard { key: cluster_key.clone(), required: true });
    }
    admin.at("/crash").post(crash);
    admin.at("/stall").post(stall);
    admin.at("/partition").post(partition);
    admin.at("/heal").post(heal);
    app.at("/admin").nest(admin);

    let mut internal = tide::with_state(handle);
    if tls {
        internal.with(CertificateGuard::Member);
    }
    internal.with(KeyGuard { key: cluster_key, required: false });
    internal.with(SettingsGuard);
    internal.at("/election").post(election);
    internal.at("/work").post(work);
    internal.at("/decimal").post(decimal);
    internal.at("/checkpoint").post(write_checkpoint);
    internal.at("/checkpoint/query").post(read_checkpoint);
    internal.at("/checkpoint/root").post(read_root);
    internal.at("/jobs/wait").post(watches::wait_jobs);
    app.at("/internal").nest(internal);
    app
}
