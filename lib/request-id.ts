/**
 * A caller's correlation id (X-Request-ID, an event's correlation_id) is taken as it is only when
 * it fits here: it goes into headers, logs and NATS message headers, where CR, LF or hundreds of
 * KB would break them. Anything else is replaced by an id of the gateway's own.
 */
const CALLER_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
export const isCallerRequestId = (value: string): boolean => CALLER_REQUEST_ID.test(value);
