// A small typed client of the onboarding API, as a frontend would write it with
// the types @graphql-codegen/cli generates with examples/codegen.ts from
// schema.graphql and examples/operations.graphql (`npm run codegen-check`
// generates them in generated/app and compiles this file with tsc).
// Renaming, retyping or dropping a field in the schema or the operations breaks
// the compilation here.
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import {
  CompleteOnboardingDocument,
  CompleteStepDocument,
  FlowStateDocument,
  OnboardingStateDocument,
  ResetOnboardingDocument,
  SetOnboardingStepDocument,
  type CompleteOnboardingMutationVariables,
  type CompleteStepMutationVariables,
  type FlowStateFieldsFragment,
  type FlowStateQueryVariables,
  type FlowStatus,
  type OnboardingStateQuery,
  type SetOnboardingStepMutationVariables,
  type StepStatus,
} from './generated/app/src/generated/graphql';

type State = OnboardingStateQuery['onboardingState'];

export function createClient(uri: string, token: string): ApolloClient {
  return new ApolloClient({
    link: new HttpLink({ uri, headers: { authorization: `Bearer ${token}` } }),
    cache: new InMemoryCache(),
  });
}

/** What an onboarding banner shows. */
export function describeState(state: State): string {
  const id: string = state.id;
  const userId: string = state.userId;
  const step: number = state.currentStep;
  const done: boolean = state.isCompleted;
  const completedAt: string | null = state.completedAt;
  const since: Date = new Date(state.createdAt);
  const changed: Date = new Date(state.updatedAt);
  if (done && completedAt !== null) return `${userId} (${id}) finished at step ${step} on ${new Date(completedAt).toISOString()}`;
  return `${userId} (${id}) is on step ${step} since ${since.toISOString()}, last change ${changed.toISOString()}`;
}

export async function currentState(client: ApolloClient, userId?: string): Promise<State> {
  const { data } = await client.query({ query: OnboardingStateDocument, variables: { userId } });
  if (!data) throw new Error('no data');
  return data.onboardingState;
}

export async function complete(client: ApolloClient, step?: number): Promise<State> {
  const variables: CompleteOnboardingMutationVariables = step === undefined ? {} : { step };
  const { data } = await client.mutate({ mutation: CompleteOnboardingDocument, variables });
  if (!data) throw new Error('no data');
  return data.completeOnboarding;
}

export async function goToStep(client: ApolloClient, step: number, userId?: string): Promise<number> {
  const variables: SetOnboardingStepMutationVariables = { step, userId };
  const { data } = await client.mutate({ mutation: SetOnboardingStepDocument, variables });
  return data?.setOnboardingStep.currentStep ?? 0;
}

export async function startOver(client: ApolloClient): Promise<string | null | undefined> {
  const { data } = await client.mutate({ mutation: ResetOnboardingDocument });
  return data?.resetOnboarding.completedAt;
}

// Flows: a checklist widget that reads the user's state in one flow and ticks a step off.
type Flow = FlowStateFieldsFragment;

/** What a checklist widget shows: "2 of 3 done", the current step, each step's tick. */
export function describeFlow(state: Flow): string {
  const id: string = state.id; // `<userId>/<flow>`, what the cache keys it by
  const status: FlowStatus = state.status;
  const current: string | null = state.currentStep;
  const index: number = state.currentStepIndex;
  const ticks = state.steps.map((step) => {
    const done: StepStatus = step.status;
    const at: string | null = step.completedAt ?? step.skippedAt;
    const role = step.data?.['role'];
    return `${done === 'COMPLETED' ? '✓' : done === 'SKIPPED' ? '–' : '·'} ${step.key}${at ? ` (${at})` : ''}${typeof role === 'string' ? ` as ${role}` : ''}`;
  });
  const snoozed = state.snoozedUntil === null ? '' : `, snoozed until ${new Date(state.snoozedUntil).toISOString()}`;
  const progress = `${state.doneSteps} of ${state.totalSteps} done`;
  const where = current === null ? 'no step left' : `on ${current} (#${index + 1})`;
  return `${id} ${state.flow} v${state.version}: ${status}, ${progress}, ${where}${snoozed}, revision ${state.revision}\n${ticks.join('\n')}`;
}

export async function flowState(client: ApolloClient, flow: string, userId?: string): Promise<Flow> {
  const variables: FlowStateQueryVariables = { flow, userId };
  const { data } = await client.query({ query: FlowStateDocument, variables });
  if (!data) throw new Error('no data');
  return data.flowState;
}

/**
 * Completes `step` with the answers given there, based on the revision the
 * widget showed (a CONFLICT error if the state moved on meanwhile), retry-safe
 * under `idempotencyKey`.
 */
export async function completeStep(
  client: ApolloClient,
  shown: Flow,
  step: string,
  answers: { [key: string]: unknown },
  idempotencyKey: string,
): Promise<Flow> {
  const variables: CompleteStepMutationVariables = {
    flow: shown.flow,
    step,
    data: answers,
    expectedRevision: shown.revision,
    idempotencyKey,
  };
  const { data } = await client.mutate({ mutation: CompleteStepDocument, variables });
  if (!data) throw new Error('no data');
  return data.completeStep;
}

// The generated types are strict, not `any`: each line below must be an error.
// @ts-expect-error `step` is an Int, not a string
export const wrongStep: CompleteOnboardingMutationVariables = { step: 'three' };
// @ts-expect-error setOnboardingStep needs a step
export const missingStep: SetOnboardingStepMutationVariables = {};
// @ts-expect-error there is no such field
export const unknownField = (state: State) => state.finishedAt;
// @ts-expect-error completedAt may be null
export const notNull = (state: State): string => state.completedAt;
// @ts-expect-error completeStep needs the step's key
export const noStepKey: CompleteStepMutationVariables = { flow: 'welcome-tour' };
// @ts-expect-error a flow status is one of the enum's values
export const badStatus: FlowStatus = 'FINISHED';
// @ts-expect-error currentStep is null once every step is done
export const currentStepAlways = (state: Flow): string => state.currentStep;
// @ts-expect-error expectedRevision is an Int
export const revisionText: CompleteStepMutationVariables = { flow: 'tour', step: 'a', expectedRevision: '3' };
