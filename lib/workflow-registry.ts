import { z } from 'zod';
import { paymentInput } from './payments';

/**
 * The workflow registry: every type a client may start, with its input and signal schemas,
 * task queue and timeouts. The gateway validates with it, the consumers start with it, the
 * worker runs the same names, and GET /api/workflow-types publishes it as JSON Schema.
 */
export type WorkflowTypeDef = {
  /** The public name: POST /api/workflows/{name}. */
  name: string;
  /** The exported workflow function in workflows/index.ts. */
  workflow: string;
  description: string;
  input: z.ZodType;
  signals: Record<string, z.ZodType>;
  /** Defaults to the configured task queue. */
  taskQueue?: string;
  executionTimeout?: string;
  /** Started by the platform itself (e.g. the outbound proxy), never through POST /api/workflows. */
  internal?: boolean;
};

const decision = z.object({ approver: z.string().min(1).max(200), comment: z.string().max(2000).optional() }).strict();

const definitions: WorkflowTypeDef[] = [
  {
    name: 'hello',
    workflow: 'hello',
    description: 'Greets a name: one activity, the smallest workflow.',
    input: z.object({ name: z.string().min(1).max(200) }).strict(),
    signals: {},
    executionTimeout: '1 hour',
  },
  {
    name: 'approval-request',
    workflow: 'approvalRequest',
    description: 'Waits for an approve or reject signal from someone other than the requester, before a deadline.',
    input: z
      .object({
        subject: z.string().min(1).max(500),
        requester: z.string().min(1).max(200),
        timeout_seconds: z.number().int().min(1).max(30 * 86_400).optional(),
      })
      .strict(),
    signals: { approve: decision, reject: decision },
    executionTimeout: '31 days',
  },
  {
    name: 'process-payment',
    workflow: 'processPayment',
    description: 'Validates, waits for an approval above the tenant threshold, charges once, books a double-entry ledger and notifies; refunds on a later failure or a cancel.',
    input: paymentInput,
    signals: { approve: decision, reject: decision },
    executionTimeout: '31 days',
  },
  {
    name: 'third-party-call',
    workflow: 'thirdPartyCall',
    description: 'One call to a third party through its breaker (POST /outbound/3rdparty/{service}/{path}).',
    input: z.object({
      service: z.string().min(1),
      method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
      path: z.string().min(1).max(2000),
      body: z.unknown().optional(),
      idempotency_key: z.string().max(200).optional(),
    }).strict(),
    signals: {},
    executionTimeout: '10 minutes',
    internal: true,
  },
];

const byName = new Map(definitions.map((d) => [d.name, d]));
const byWorkflow = new Map(definitions.map((d) => [d.workflow, d]));
const publicDefinitions = definitions.filter((d) => !d.internal);

export const workflowTypes = (): readonly WorkflowTypeDef[] => publicDefinitions;
/** A type clients may start (internal ones are not found). */
export const findWorkflowType = (name: string): WorkflowTypeDef | undefined => {
  const d = byName.get(name);
  return d && !d.internal ? d : undefined;
};
/** Any registered type, internal ones included: for the platform's own starts. */
export const registeredWorkflowType = (name: string): WorkflowTypeDef | undefined => byName.get(name);
/** Maps Temporal's workflow type (the function name) back to the public name. */
export const publicTypeName = (temporalType: string): string => byWorkflow.get(temporalType)?.name ?? temporalType;

const publish = () =>
  publicDefinitions.map((d) => ({
    name: d.name,
    description: d.description,
    input_schema: z.toJSONSchema(d.input),
    signals: Object.fromEntries(Object.entries(d.signals).map(([k, v]) => [k, z.toJSONSchema(v)])),
  }));
let published: ReturnType<typeof publish> | undefined;

/** The registry as JSON Schema, for clients discovering what they may start (generated once: the registry is static). */
export function describeWorkflowTypes(): ReturnType<typeof publish> {
  return (published ??= publish());
}
