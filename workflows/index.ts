// The workflow bundle's entry: every workflow type the worker runs.
export { hello } from './hello';
export { approvalRequest } from './approval';
