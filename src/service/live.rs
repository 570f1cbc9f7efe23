//! Live updates: a flow state now, then after every committed change, for
//! as long as the subscriber listens.
//!
//! A subscription watches the owner of the states (a user or a group) before
//! it reads them, so that no change falls between its read and its watch.
//! Word of a change carries no state: the subscription reads it afresh, so
//! a burst of changes costs one read and sends only the newest state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::flows::{FlowStateView, Flows, current, signed_in};
use crate::db::Watch;
use crate::domain::{Access, Flow, Result, Scope, Subject, Viewer, now};

/// What a subscription follows: one flow, or every flow of a scope.
enum Followed {
    Flow(Arc<Flow>),
    Every(Scope),
}

/// A subscription between two messages.
struct Following {
    flows: Flows,
    watch: Watch,
    subject: Subject,
    followed: Followed,
    /// The revision last sent, by flow.
    sent: BTreeMap<String, i64>,
    /// States read and not yet sent.
    pending: VecDeque<FlowStateView>,
    /// How many times the watch said changes may have gone unheard.
    resyncs: u64,
    /// Set once the owner's states are gone (erased): the subscription ends
    /// with what it has sent, and nothing of theirs follows.
    ended: bool,
}

impl Flows {
    /// The states `flowStateChanged` sends: the state in `flow` (or in every
    /// flow of the user, or of the group with `group_id`), then each state
    /// again after every change committed to it, newest revision only.
    /// Authorized as `flowState` is, once, here.
    pub async fn watch(
        &self,
        viewer: &Viewer,
        flow: Option<&str>,
        user_id: Option<String>,
        group_id: Option<String>,
    ) -> Result<BoxStream<'static, Result<FlowStateView>>> {
        signed_in(viewer)?;
        let (subject, followed) = match flow {
            Some(key) => {
                let flow = self.published(key).await?;
                let subject = viewer.subject(&flow, user_id, group_id, Access::Read)?;
                (subject, Followed::Flow(flow))
            }
            None => {
                let user = viewer.acting_on(user_id)?;
                match group_id {
                    None => (Subject::User(user), Followed::Every(Scope::User)),
                    Some(group_id) => {
                        let group = viewer.group(Some(group_id), String::new)?;
                        (
                            Subject::Group { group, user },
                            Followed::Every(Scope::Group),
                        )
                    }
                }
            }
        };
        let watch = self.store.live().watch(subject.key()).await?;
        let first = match &followed {
            Followed::Flow(flow) => vec![self.state_now(flow, &subject, now()).await?],
            Followed::Every(scope) => self.states_of(&subject, *scope).await?,
        };
        let resyncs = watch.changes.borrow().resyncs;
        let mut following = Following {
            flows: self.clone(),
            watch,
            subject,
            followed,
            sent: BTreeMap::new(),
            pending: VecDeque::new(),
            resyncs,
            ended: false,
        };
        for view in first {
            following
                .sent
                .insert(view.state.flow.clone(), view.state.revision);
            following.pending.push_back(view);
        }
        Ok(futures_util::stream::unfold(following, next_message).boxed())
    }
}

/// The next message of a subscription, waiting for a change when it has
/// sent all it read; none once the states are erased.
async fn next_message(mut following: Following) -> Option<(Result<FlowStateView>, Following)> {
    loop {
        if let Some(view) = following.pending.pop_front() {
            return Some((Ok(view), following));
        }
        if following.ended {
            return None;
        }
        following.watch.changes.changed().await.ok()?;
        let resyncs = following.watch.changes.borrow_and_update().resyncs;
        // Changes may have gone unheard: the current state goes again.
        let resend = resyncs != following.resyncs;
        following.resyncs = resyncs;
        if let Err(error) = following.read_changed(resend).await {
            following.ended = true;
            return Some((Err(error), following));
        }
    }
}

impl Following {
    /// Reads the followed states and queues those with a newer revision
    /// than was sent, or all of them when `resend`. A state no longer stored
    /// was erased: it ends the subscription. A read never writes.
    async fn read_changed(&mut self, resend: bool) -> Result<()> {
        let views = match &self.followed {
            Followed::Flow(flow) => {
                let Some(state) = self
                    .flows
                    .store
                    .state(self.subject.key(), flow.key())
                    .await?
                else {
                    self.ended = true;
                    return Ok(());
                };
                let flow = self
                    .flows
                    .with_version(Arc::clone(flow), state.version)
                    .await?;
                vec![current(&flow, state, &self.subject, now())?]
            }
            Followed::Every(scope) => {
                let stored = self.flows.stored_states_of(&self.subject, *scope).await?;
                let erased = self.sent.iter().any(|(flow, revision)| {
                    *revision > 0 && !stored.iter().any(|view| &view.state.flow == flow)
                });
                if erased {
                    self.ended = true;
                    return Ok(());
                }
                stored
            }
        };
        for view in views {
            let sent = self.sent.entry(view.state.flow.clone()).or_insert(-1);
            if resend || view.state.revision > *sent {
                *sent = view.state.revision;
                self.pending.push_back(view);
            }
        }
        Ok(())
    }
}
