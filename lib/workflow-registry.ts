import { z } from 'zod';

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
];

const byName = new Map(definitions.map((d) => [d.name, d]));
const byWorkflow = new Map(definitions.map((d) => [d.workflow, d]));

export const workflowTypes = (): readonly WorkflowTypeDef[] => definitions;
export const findWorkflowType = (name: string): WorkflowTypeDef | undefined => byName.get(name);
/** Maps Temporal's workflow type (the function name) back to the public name. */
export const publicTypeName = (temporalType: string): string => byWorkflow.get(temporalType)?.name ?? temporalType;

const publish = () =>
  definitions.map((d) => ({
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
