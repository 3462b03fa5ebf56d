export function squaredSingularValues(a: Float32Array, m: number, n: number): Float64Array { void a; void m; void n; throw new Error('todo'); }
export function truncatedSvd(a: Float32Array, m: number, n: number, k: number): { u: Float32Array; s: Float64Array; v: Float32Array } { void a; void m; void n; void k; throw new Error('todo'); }
