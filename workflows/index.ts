// The workflow bundle's entry: every workflow type the worker runs.
export { hello } from './hello';
export { approvalRequest } from './approval';
export { processPayment } from './payment';
export { thirdPartyCall } from './third-party-call';
export { noopActivities } from './noop';
export { rotateSecret } from './rotate-secret';
export { configRollout } from './config-rollout';
export { databaseFailover } from './database-failover';
export { backupDrill } from './backup-drill';
export { gatewayInstanceLoss } from './gateway-instance-loss';
