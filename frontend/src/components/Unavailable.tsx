// The clear state for a screen whose API this gateway does not offer (a feature not deployed).
export function Unavailable({ feature }: { feature: string }) {
  return (
    <div class="card unavailable" role="status">
      <h2>{feature} is not available</h2>
      <p class="muted">This Enclave server does not offer it yet. Ask your administrator to update it.</p>
    </div>
  );
}
