// Uploading one file and following its ingest job: the upload's own progress (XHR reports
// bytes sent; fetch cannot), then the job's state and progress from /api/jobs/{id}.
import { cookieValue, getJson, type Job } from "./api";

export interface UploadState {
  phase: "uploading" | "queued" | "running" | "done" | "failed" | "duplicate";
  progress: number; // 0..1 of the current phase
  stage?: string | null;
  message?: string | null;
  documentId?: string;
}

export function uploadFile(file: File, groups: string, onProgress: (fraction: number) => void): Promise<{ document_id: string; job_id: string | null; duplicate?: boolean }> {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file);
    if (groups.trim()) form.append("groups", groups);
    const request = new XMLHttpRequest();
    request.open("POST", "/api/documents");
    const csrf = cookieValue("enclave_csrf");
    if (csrf) request.setRequestHeader("X-CSRF-Token", csrf);
    request.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    request.onload = () => {
      let body: any = null;
      try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) resolve(body);
      else reject(new Error(body?.error?.message ?? `${request.status} ${request.statusText}`));
    };
    request.onerror = () => reject(new Error("the upload failed (network error)"));
    request.send(form);
  });
}

/** Polls the job until it is done or failed, reporting each state seen. */
export async function followJob(jobId: string, onState: (job: Job) => void, intervalMs = 600): Promise<Job> {
  for (;;) {
    const job = await getJson<Job>(`/api/jobs/${encodeURIComponent(jobId)}`);
    onState(job);
    if (job.state === "done" || job.state === "failed") return job;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
