// A small typed client of the onboarding API, as a frontend would write it with
// the types @graphql-codegen/cli generates from schema.graphql and
// examples/operations.graphql (`npm run codegen-check` compiles it with tsc).
// Renaming, retyping or dropping a field in the schema or the operations breaks
// the compilation here.
import { ApolloClient, HttpLink, InMemoryCache } from '@apollo/client';
import {
  CompleteOnboardingDocument,
  OnboardingStateDocument,
  ResetOnboardingDocument,
  SetOnboardingStepDocument,
  type CompleteOnboardingMutationVariables,
  type OnboardingStateQuery,
  type SetOnboardingStepMutationVariables,
} from './generated/graphql';

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

// The generated types are strict, not `any`: each line below must be an error.
// @ts-expect-error `step` is an Int, not a string
export const wrongStep: CompleteOnboardingMutationVariables = { step: 'three' };
// @ts-expect-error setOnboardingStep needs a step
export const missingStep: SetOnboardingStepMutationVariables = {};
// @ts-expect-error there is no such field
export const unknownField = (state: State) => state.finishedAt;
// @ts-expect-error completedAt may be null
export const notNull = (state: State): string => state.completedAt;
